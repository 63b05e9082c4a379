use std::process::ExitCode;

fn main() -> ExitCode {
    // First, before any thread or runtime exists: in exec-helper mode this
    // never returns.
    appvisor::spawn::child::dispatch_from_args();

    eprintln!("appvisord: not implemented yet");
    ExitCode::from(2)
}
