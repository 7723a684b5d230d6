use std::process::ExitCode;

fn main() -> ExitCode {
    stackpin::cli::main()
}
