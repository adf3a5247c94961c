//! The terminal UI (ratatui + crossterm), Elm style: one [`App`] state, [`update`] turns messages
//! into state changes and worker commands, [`view`] draws. The event loop polls the keyboard
//! with a short timeout and drains the worker's events, so the UI stays live while edits run.

pub mod app;
pub mod update;
pub mod view;
pub mod watch;

use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent};

pub use app::App;
pub use update::{update, Effect, Msg};
pub use view::view;

use crate::error::{Error, Result};
use crate::worker::WorkerHandle;

/// Runs the UI until the user quits. The terminal is restored on every exit path (ratatui's
/// init installs a panic hook that restores it too).
pub fn run(worker: WorkerHandle, mut app: App, initial: Vec<Effect>) -> Result<App> {
    let mut terminal =
        ratatui::try_init().map_err(|e| Error::Input(format!("cannot open the terminal: {e}")))?;
    let result = event_loop(&mut terminal, &worker, &mut app, initial);
    ratatui::restore();
    worker
        .cancel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join();
    result.map(|_| app)
}

fn apply_effects(worker: &WorkerHandle, effects: Vec<Effect>) {
    for e in effects {
        match e {
            Effect::Send(c) => worker.send(c),
            Effect::CancelInFlight => worker
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Effect::Quit => {}
        }
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    worker: &WorkerHandle,
    app: &mut App,
    initial: Vec<Effect>,
) -> Result<()> {
    apply_effects(worker, initial);
    let io = |e: std::io::Error| Error::Input(format!("terminal: {e}"));
    loop {
        let t = Instant::now();
        terminal.draw(|f| view(f, app)).map_err(io)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        app.frame_ms = (ms, app.frame_ms.1.max(ms));
        let mut msgs = Vec::new();
        if event::poll(Duration::from_millis(50)).map_err(io)? {
            match event::read().map_err(io)? {
                TermEvent::Key(k) => msgs.push(Msg::Key(k)),
                TermEvent::Resize(..) => msgs.push(Msg::Resize),
                _ => {}
            }
        }
        let mut disconnected = false;
        loop {
            match worker.events.try_recv() {
                Ok(e) => msgs.push(Msg::Worker(e)),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        for m in msgs {
            let fx = update(app, m);
            apply_effects(worker, fx);
        }
        if app.should_quit {
            return Ok(());
        }
        if disconnected && !app.should_quit {
            app.last_error = Some("the worker stopped".into());
        }
    }
}

#[cfg(test)]
mod tests;
