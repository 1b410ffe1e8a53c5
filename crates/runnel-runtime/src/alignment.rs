//! [`BarrierAligner`]: checkpoint barrier alignment for tasks with several inputs (the
//! channels of a subtask's upstream subtasks, a join's two sides). Once an input delivered
//! barrier `n`, its later messages wait until every other live input delivered barrier `n`
//! too; then the task snapshots, sends the barrier on, and the held messages flow again.
//! So a snapshot reflects exactly the messages before barrier `n` on every input.

use std::collections::VecDeque;

use crate::checkpoint::CheckpointId;
use crate::message::Message;

/// What a multi-input task does next.
#[derive(Debug)]
pub enum Aligned {
    /// Process this message of input `index`.
    Message(usize, Message),
    /// Every input reached barrier `id`: snapshot and send it on.
    Barrier(CheckpointId),
}

/// Orders a multi-input task's messages so that barriers are aligned.
#[derive(Debug)]
pub struct BarrierAligner {
    /// Inputs that delivered the pending barrier (their messages wait).
    blocked: Vec<bool>,
    ended: Vec<bool>,
    held: Vec<VecDeque<Message>>,
    pending: Option<CheckpointId>,
    ready: VecDeque<Aligned>,
}

impl BarrierAligner {
    pub fn new(inputs: usize) -> Self {
        Self {
            blocked: vec![false; inputs],
            ended: vec![false; inputs],
            held: (0..inputs).map(|_| VecDeque::new()).collect(),
            pending: None,
            ready: VecDeque::new(),
        }
    }

    /// A message arrived on input `index`.
    pub fn offer(&mut self, index: usize, message: Message) {
        if self.blocked[index] {
            self.held[index].push_back(message);
        } else {
            self.accept(index, message);
        }
    }

    /// The next thing to do, in order.
    pub fn next_ready(&mut self) -> Option<Aligned> {
        self.ready.pop_front()
    }

    fn accept(&mut self, index: usize, message: Message) {
        match message {
            Message::Barrier(id) => {
                self.blocked[index] = true;
                self.pending = Some(id);
                self.release_if_aligned();
            }
            Message::End => {
                self.ended[index] = true;
                self.ready.push_back(Aligned::Message(index, Message::End));
                self.release_if_aligned();
            }
            other => self.ready.push_back(Aligned::Message(index, other)),
        }
    }

    fn release_if_aligned(&mut self) {
        let Some(id) = self.pending else { return };
        if !(0..self.blocked.len()).all(|i| self.blocked[i] || self.ended[i]) {
            return;
        }
        self.pending = None;
        self.ready.push_back(Aligned::Barrier(id));
        self.blocked.iter_mut().for_each(|b| *b = false);
        for index in 0..self.held.len() {
            while !self.blocked[index] {
                let Some(message) = self.held[index].pop_front() else {
                    break;
                };
                self.accept(index, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(aligner: &mut BarrierAligner) -> Vec<String> {
        std::iter::from_fn(|| aligner.next_ready())
            .map(|a| match a {
                Aligned::Message(i, Message::Watermark(w)) => format!("{i}:w{w}"),
                Aligned::Message(i, Message::End) => format!("{i}:end"),
                Aligned::Message(i, _) => format!("{i}:?"),
                Aligned::Barrier(id) => format!("barrier {id}"),
            })
            .collect()
    }

    #[test]
    fn messages_after_a_barrier_wait_for_the_other_inputs_barrier() {
        let mut aligner = BarrierAligner::new(2);
        aligner.offer(0, Message::Watermark(1));
        aligner.offer(0, Message::Barrier(7));
        aligner.offer(0, Message::Watermark(2)); // after barrier 7 on input 0: waits
        aligner.offer(1, Message::Watermark(10)); // before barrier 7 on input 1: flows
        assert_eq!(drain(&mut aligner), ["0:w1", "1:w10"]);
        aligner.offer(1, Message::Barrier(7));
        aligner.offer(1, Message::Watermark(11));
        assert_eq!(drain(&mut aligner), ["barrier 7", "0:w2", "1:w11"]);
    }

    #[test]
    fn an_ended_input_does_not_hold_barriers_back() {
        let mut aligner = BarrierAligner::new(2);
        aligner.offer(1, Message::End);
        aligner.offer(0, Message::Barrier(3));
        aligner.offer(0, Message::Watermark(5));
        assert_eq!(drain(&mut aligner), ["1:end", "barrier 3", "0:w5"]);
        // A barrier waiting on an input that then ends is released by its end.
        let mut aligner = BarrierAligner::new(2);
        aligner.offer(0, Message::Barrier(4));
        aligner.offer(0, Message::Watermark(6));
        aligner.offer(1, Message::End);
        assert_eq!(drain(&mut aligner), ["1:end", "barrier 4", "0:w6"]);
    }
}
