//! The `netrun` command: runs a node (`netrun start`) and talks to a running one.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
