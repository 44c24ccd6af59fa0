fn main() {
    eprintln!("devmmu: not yet implemented");
    std::process::exit(2);
}
