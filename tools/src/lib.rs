//! Library half of the `devmmu` command: the scenarios and their pieces.
