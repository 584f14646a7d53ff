//! `lambdawatch-extension`: see the crate docs (`src/lib.rs`) for the stage diagram and settings.

use lambdawatch_extension::{config::Config, lifecycle};

fn main() {
    let (cfg, warnings) = Config::from_env();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("[lambdawatch] ERROR cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(lifecycle::run(cfg, warnings));
    std::process::exit(code);
}
