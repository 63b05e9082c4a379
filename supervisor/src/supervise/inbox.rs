//! The command channel of an app's task: a queue under a mutex and the
//! task's waker. Every app has one for its whole life and gets a few
//! commands in it; tokio's unbounded channel cost each app about 800 bytes
//! (its state, cache-padded, and a first block of 32 slots), this about a
//! hundred, and nothing while the queue is empty.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Command, TaskGone};
use crate::locks;

/// A new channel: the senders' end and the task's.
pub(super) fn channel() -> (Commands, Inbox) {
    let shared = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        senders: 1,
        closed: false,
    }));
    (Commands(Arc::clone(&shared)), Inbox(shared))
}

struct State {
    queue: VecDeque<Box<Command>>,
    /// The task, waiting for a command.
    waker: Option<Waker>,
    /// `Commands` alive; none left reads as the end of the commands.
    senders: usize,
    /// The task's end is gone: nothing more is taken.
    closed: bool,
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change under the lock leaves the state consistent.
    locks::lock(shared)
}

/// The sending side of an app task's commands. Commands travel boxed, so
/// the queue's slots stay a pointer wide.
pub struct Commands(Arc<Mutex<State>>);

impl Commands {
    /// Queues `command` for the task; `TaskGone` once the task has ended.
    pub fn send(&self, command: Command) -> Result<(), TaskGone> {
        let waker = {
            let mut state = lock(&self.0);
            if state.closed {
                return Err(TaskGone);
            }
            state.queue.push_back(Box::new(command));
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Clone for Commands {
    fn clone(&self) -> Commands {
        lock(&self.0).senders += 1;
        Commands(Arc::clone(&self.0))
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

/// The task's end of its commands.
pub(super) struct Inbox(Arc<Mutex<State>>);

impl Inbox {
    /// The next command; `None` once every sender is gone and the queue
    /// is empty. Cancel-safe: a command is taken only when returned.
    pub(super) async fn recv(&mut self) -> Option<Box<Command>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Box<Command>>> {
        let mut state = lock(&self.0);
        if let Some(command) = state.queue.pop_front() {
            if state.queue.is_empty() {
                // Its room freed: kept, it would sit in every idle app.
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some(command));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The commands left are dropped after the lock: their callers'
        // reply channels close, as when the task is gone.
        let (queue, waker) = {
            let mut state = lock(&self.0);
            state.closed = true;
            (std::mem::take(&mut state.queue), state.waker.take())
        };
        drop(queue);
        drop(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Cause;

    fn shutdown() -> Command {
        Command::Shutdown {
            cause: Cause::Shutdown,
        }
    }

    #[tokio::test]
    async fn commands_arrive_in_order_and_the_end_follows_the_last_sender() {
        let (commands, mut inbox) = channel();
        let second = commands.clone();
        commands.send(shutdown()).unwrap();
        second
            .send(Command::Freeze {
                reply: tokio::sync::oneshot::channel().0,
            })
            .unwrap();
        assert!(matches!(
            inbox.recv().await.as_deref(),
            Some(Command::Shutdown { .. })
        ));
        assert!(matches!(
            inbox.recv().await.as_deref(),
            Some(Command::Freeze { .. })
        ));
        drop(commands);
        let waiting = tokio::spawn(async move { inbox.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(second);
        assert!(waiting.await.unwrap(), "no sender left: the end");
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_for_a_command() {
        let (commands, mut inbox) = channel();
        let waiting = tokio::spawn(async move { inbox.recv().await.is_some() });
        tokio::task::yield_now().await;
        commands.send(shutdown()).unwrap();
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn sending_to_a_gone_task_fails_and_queued_replies_close() {
        let (commands, inbox) = channel();
        let (reply, mut replied) = tokio::sync::oneshot::channel();
        commands.send(Command::Freeze { reply }).unwrap();
        drop(inbox);
        assert_eq!(
            replied.try_recv().err(),
            Some(tokio::sync::oneshot::error::TryRecvError::Closed),
            "the queued command was dropped"
        );
        assert!(commands.send(shutdown()).is_err());
    }
}
