//! The worker's front desk: it takes every command the moment it arrives. It owns the queue,
//! the pause and the decks, so `x`, `space`, `l` and `o` are answered while an edit is in flight;
//! everything that needs the model goes to the engine in the order it was asked, and the next
//! queued edit goes when the engine says it is free.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};

use super::{Job, Task};
use crate::edit::EditRequest;
use crate::error::{Error, Result};

use super::protocol::{Command, Event};

/// How many queued requests an edit is handed as its `upcoming`: more than any sensible
/// `target_batch` (8 by default), so a pass is never cut short by the look-ahead, while a deck of
/// thousands is not copied with every edit.
pub(super) const LOOKAHEAD: usize = 64;

/// What reaches the desk: the UI's commands and the engine's "free again".
#[derive(Debug)]
pub(crate) enum DeskMsg {
    Ui(Command),
    EngineFree,
}

pub(super) struct Desk {
    queue: VecDeque<(u64, EditRequest)>,
    paused: bool,
    /// An edit has been handed to the engine and has not finished.
    in_flight: bool,
    engine: Sender<Job>,
    events: Sender<Event>,
    data_dir: Option<PathBuf>,
    /// The loaded model's sha256: a session recorded on another model is refused.
    model_sha256: String,
}

impl Desk {
    pub(super) fn new(
        engine: Sender<Job>,
        events: Sender<Event>,
        data_dir: Option<PathBuf>,
        model_sha256: String,
    ) -> Self {
        Self {
            queue: VecDeque::new(),
            paused: false,
            in_flight: false,
            engine,
            events,
            data_dir,
            model_sha256,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn task(&self, t: Task) {
        let _ = self.engine.send(Job::Task(t));
    }

    /// Serves until the UI quits or goes away; then tells the engine to stop after its job.
    pub(super) fn run(mut self, inbox: Receiver<DeskMsg>) {
        for msg in inbox {
            match msg {
                DeskMsg::Ui(Command::Quit) => break,
                DeskMsg::Ui(c) => self.handle(c),
                DeskMsg::EngineFree => {
                    self.in_flight = false;
                    if self.queue.is_empty() {
                        self.emit(Event::Idle);
                    }
                }
            }
            self.dispatch();
        }
        let _ = self.engine.send(Job::Quit);
    }

    /// Hands the next queued edit to the engine when it is free and the desk is not paused.
    fn dispatch(&mut self) {
        if self.in_flight || self.paused {
            return;
        }
        if let Some((id, request)) = self.queue.pop_front() {
            self.in_flight = true;
            let upcoming = self
                .queue
                .iter()
                .take(LOOKAHEAD)
                .map(|(_, r)| r.clone())
                .collect();
            let _ = self.engine.send(Job::Edit {
                id,
                request,
                upcoming,
            });
        }
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Edit { id, request } => {
                self.task(Task::Requested(vec![request.clone()]));
                self.queue.push_back((id, request));
            }
            Command::EditAll(edits) => {
                self.task(Task::Requested(
                    edits.iter().map(|(_, r)| r.clone()).collect(),
                ));
                self.queue.extend(edits);
            }
            Command::ClearQueue => {
                let (ids, requests): (Vec<u64>, Vec<EditRequest>) = self.queue.drain(..).unzip();
                self.emit(Event::QueueCleared {
                    ids,
                    in_flight: self.in_flight,
                });
                if !requests.is_empty() {
                    self.task(Task::Dropped(requests));
                }
            }
            Command::Pause(p) => {
                self.paused = p;
                self.emit(Event::Paused(p));
            }
            Command::LoadDeck(spec) => {
                match crate::eval::deck::load_deck(&spec, self.data_dir.as_deref()) {
                    Ok((requests, skipped)) => self.emit(Event::Deck {
                        source: spec,
                        requests,
                        skipped,
                    }),
                    Err(e) => self.emit(Event::Error(format!("deck {spec:?}: {e}"))),
                }
            }
            Command::OpenSession(dir) => match session_requests(&dir, &self.model_sha256) {
                Ok(requests) => self.emit(Event::Deck {
                    source: format!("session {}", dir.display()),
                    requests,
                    skipped: Vec::new(),
                }),
                Err(e) => self.emit(Event::Error(format!("open session: {e}"))),
            },
            Command::Undo => self.task(Task::Undo),
            Command::SetMethod(m) => self.task(Task::SetMethod(m)),
            Command::RunProbes => self.task(Task::RunProbes),
            Command::Evaluate => self.task(Task::Evaluate),
            Command::Save => self.task(Task::Save),
            Command::Bisect { probe, drop } => self.task(Task::Bisect { probe, drop }),
            Command::Quit => {}
        }
    }
}

/// A session's applied edits, in order, if it was recorded on this model.
fn session_requests(dir: &Path, model_sha256: &str) -> Result<Vec<EditRequest>> {
    let loaded = crate::session::journal::read_journal(&dir.join("journal.jsonl"))?;
    let meta = crate::session::journal::read_meta(dir)?;
    if meta.model.sha256 != model_sha256 {
        return Err(Error::Input(format!(
            "{} was recorded on another model ({})",
            dir.display(),
            meta.model.name
        )));
    }
    Ok(loaded
        .events
        .iter()
        .filter_map(|e| match e {
            crate::session::Event::Applied { requests, .. } => Some(requests.clone()),
            _ => None,
        })
        .flatten()
        .collect())
}
