//! The commit pipeline: the stages a handed-off request goes through, and the
//! bounded queue that leads into them.
//!
//! A reactor hands a complete request over together with its connection
//! (`Box<Connection>`); whoever holds the box owns the socket, and the last
//! stage returns it to its home reactor with the response written into it.
//!
//! For now there is one stage, a stand-in that answers the commit-path routes
//! with `503 unavailable`: the sequencer, persistence and reply stages replace
//! it, behind the same queue and message type.

pub mod published;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::server::connection::Connection;
use crate::server::response::ApiError;
use crate::server::ReactorHandles;

/// The one message type the first stage takes.
pub enum StageMessage {
    /// A complete request and the connection it came on.
    Request(Box<Connection>),
    /// Finish what is queued, then stop.
    Shutdown,
}

/// The sending side of the pipeline's bounded queue plus its thread.
pub struct Pipeline {
    sender: Sender<StageMessage>,
    thread: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the stage thread; replies go back through `reactors`.
    pub fn start(queue_depth: usize, reactors: Arc<ReactorHandles>) -> std::io::Result<Pipeline> {
        let (sender, receiver) = crossbeam_channel::bounded(queue_depth);
        let thread = std::thread::Builder::new()
            .name("stoat-pipeline".into())
            .spawn(move || run_stand_in_stage(receiver, reactors))?;
        Ok(Pipeline {
            sender,
            thread: Some(thread),
        })
    }

    /// A sender for reactors; `try_send` on a full queue fails at once.
    pub fn sender(&self) -> Sender<StageMessage> {
        self.sender.clone()
    }

    /// Asks the stage to finish what it has and waits for it.
    pub fn stop(mut self) {
        let _ = self.sender.send(StageMessage::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_stand_in_stage(receiver: Receiver<StageMessage>, reactors: Arc<ReactorHandles>) {
    while let Ok(message) = receiver.recv() {
        match message {
            StageMessage::Request(mut connection) => {
                let error = ApiError::Unavailable(format!(
                    "{} is not available yet: this build has no commit pipeline",
                    connection.route().path_description()
                ));
                connection.respond_error(&error);
                reactors.return_connection(connection);
            }
            StageMessage::Shutdown => break,
        }
    }
}
