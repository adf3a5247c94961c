use clap::Parser;

mod cli;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        // A closed stdout (e.g. piped into `head`) is not worth a message.
        let broken_pipe = e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if !broken_pipe {
            eprintln!("error: {e:#}");
        }
        std::process::exit(if broken_pipe { 0 } else { 1 });
    }
}
