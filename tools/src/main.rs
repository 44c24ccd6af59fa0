//! The `devmmu` command. See `devmmu --help`.
//!
//! Exit status: 0 on success; 1 when the scenario ran but failed its own check (a frame did not
//! match, or the device faulted); 2 for bad usage or bad input (one line on stderr).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use devmmu_tools::camera::{self, CameraArgs, CameraError};
use devmmu_tools::pipeline::{self, PipelineArgs, PipelineError};

/// Drivers for devices with their own MMU: scenarios on a simulated device.
#[derive(Parser, Debug)]
#[command(
    name = "devmmu",
    version,
    about,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = false
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture frames through a camera ISP with its own MMU (Intel IPU-style) and check them.
    Camera(CameraArgs),
    /// Camera to GPU (Vulkan) to display through shared BOs and explicit fences, each frame
    /// checked against a CPU reference.
    Pipeline(PipelineArgs),
    /// Page tables: decode IOPTE values, walk or dump a table built from a description file.
    Pt(devmmu_tools::pt::PtArgs),
    /// Replay a trace of `devmmu camera --trace` on another configuration and compare.
    Replay(devmmu_tools::trace::ReplayArgs),
}

fn main() -> ExitCode {
    // An interrupted run removes its unfinished output file (see devmmu_tools::interrupt).
    if let Err(e) = devmmu_tools::interrupt::install() {
        eprintln!("devmmu: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                // clap's own handling: the help or version on stdout, exit 0.
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
                _ => {
                    // One clear line: clap's first line names the argument and the problem;
                    // the indented lines straight after it (the possible values) say what is
                    // accepted instead, so they join it.
                    let text = e.render().to_string();
                    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
                    let mut line = lines.next().unwrap_or("bad usage").to_string();
                    for more in lines.take_while(|l| l.starts_with(' ') && !l.trim().is_empty()) {
                        line.push(' ');
                        line.push_str(more.trim());
                    }
                    eprintln!("devmmu: {}", line.trim_start_matches("error: "));
                    ExitCode::from(2)
                }
            };
        }
    };
    match cli.command {
        Command::Replay(args) => {
            use devmmu_tools::trace::{read_trace, render, replay, ReplayError};
            let result = read_trace(&args.file)
                .and_then(|events| replay(&args.file, &events, args.mmu, args.dma, args.coherent));
            match result {
                Ok(r) => {
                    println!("{}", render(&r));
                    if r.differences.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("devmmu replay: {e}");
                    match e {
                        ReplayError::Trace { .. } => ExitCode::from(2),
                        ReplayError::Operation { .. } => ExitCode::from(1),
                    }
                }
            }
        }
        Command::Pt(args) => match devmmu_tools::pt::run(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("devmmu pt: {e}");
                ExitCode::from(2)
            }
        },
        Command::Camera(args) => match camera::run(&args) {
            Ok(outcome) => {
                if outcome.success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("devmmu camera: {e}");
                match e {
                    CameraError::Input(_) | CameraError::Output(_) | CameraError::Platform(_) => {
                        ExitCode::from(2)
                    }
                    _ => ExitCode::from(1),
                }
            }
        },
        Command::Pipeline(args) => match pipeline::run(&args) {
            Ok(report) => {
                if report.all_match && report.faults == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("devmmu pipeline: {e}");
                match e {
                    PipelineError::Input(_)
                    | PipelineError::Output(_)
                    | PipelineError::NoGpu(_) => ExitCode::from(2),
                    _ => ExitCode::from(1),
                }
            }
        },
    }
}
