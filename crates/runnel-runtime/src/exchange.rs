//! Moving messages between parallel subtasks: an [`Exchange`] sends one subtask's output
//! to the next stage's subtasks (rows by the hash of their key, or all to one), and
//! [`MergedInputs`] reads a subtask's input channels as one ordered stream.
//!
//! The rules that keep results the same at any parallelism:
//! - rows with equal keys always reach the same subtask (the hash is fixed, not seeded
//!   per process, so a restored job routes them as before);
//! - one channel is first-in first-out, so a key's rows keep the order one upstream
//!   subtask sent them in;
//! - watermarks, barriers and the end are sent to every downstream subtask; a subtask's
//!   watermark is the minimum over its inputs, and its barriers are aligned across them
//!   (see [`crate::alignment`]).

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::physical_expr::PhysicalExpr;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::alignment::{Aligned, BarrierAligner};
use crate::error::{Result, RuntimeError};
use crate::message::{Message, Watermark, WATERMARK_END};

/// The fixed hash that picks a row's subtask.
const ROUTING_HASH: RandomState = RandomState::with_seed(0x52_55_4e_4e_45_4c);

/// Where one subtask's output goes: along one edge, or along each of several (a table
/// read once for several scans, a sub-plan run once for several uses: every message goes
/// to each).
pub struct Exchange {
    routes: Vec<Route>,
}

/// One edge's share of an [`Exchange`].
struct Route {
    outputs: Vec<mpsc::Sender<Message>>,
    /// Rows go to the subtask their key's hash picks; without keys (one output), all go
    /// to it.
    partitioner: KeyPartitioner,
}

/// Splits batches by the fixed hash of their key into `count` parts: the subtasks of a
/// hash exchange, or the partitions of a repartition topic between processes. Equal keys
/// always land in the same part, in every process and after every restart.
pub struct KeyPartitioner {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    count: usize,
    /// The operator whose input this is (for errors).
    operator: String,
    hashes: Vec<u64>,
}

impl KeyPartitioner {
    /// Parts by the hash of `keys`, `count` of them (0 is taken as 1), feeding `operator`.
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        count: usize,
        operator: impl Into<String>,
    ) -> Self {
        Self {
            keys,
            count: count.max(1),
            operator: operator.into(),
            hashes: Vec::new(),
        }
    }

    /// How many parts it splits into.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Splits `batch` into the rows of each part (parts that get none are left out).
    pub fn partition(&mut self, batch: &RecordBatch) -> Result<Vec<(usize, RecordBatch)>> {
        if self.count == 1 || self.keys.is_empty() {
            return Ok(vec![(0, batch.clone())]);
        }
        let error = |source: datafusion::error::DataFusionError| RuntimeError::Operator {
            operator: format!("the exchange before {}", self.operator),
            source,
        };
        let keys = crate::expr::evaluate(&self.keys, batch).map_err(error)?;
        self.hashes.clear();
        self.hashes.resize(batch.num_rows(), 0);
        create_hashes(&keys, &ROUTING_HASH, &mut self.hashes).map_err(error)?;
        // Room for an even share and a quarter more: pushes rarely grow a list.
        let share = batch.num_rows() / self.count + batch.num_rows() / (4 * self.count) + 1;
        let mut rows: Vec<Vec<u32>> = (0..self.count).map(|_| Vec::with_capacity(share)).collect();
        if self.count.is_power_of_two() {
            // The same part as `hash % count`, without a division per row.
            let mask = self.count as u64 - 1;
            for (row, hash) in self.hashes.iter().enumerate() {
                rows[(hash & mask) as usize].push(row as u32);
            }
        } else {
            let count = self.count as u64;
            for (row, hash) in self.hashes.iter().enumerate() {
                rows[(hash % count) as usize].push(row as u32);
            }
        }
        let mut parts = Vec::with_capacity(rows.len());
        for (output, indices) in rows.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices))
                    .map_err(|e| error(e.into()))?
            };
            parts.push((output, part));
        }
        Ok(parts)
    }
}

impl Exchange {
    /// Sends everything to one channel.
    pub fn forward(output: mpsc::Sender<Message>) -> Self {
        Self {
            routes: vec![Route {
                outputs: vec![output],
                partitioner: KeyPartitioner::new(Vec::new(), 1, ""),
            }],
        }
    }

    /// Sends every message along each of `exchanges`, in order.
    pub fn fan_out(exchanges: Vec<Exchange>) -> Self {
        Self {
            routes: exchanges.into_iter().flat_map(|e| e.routes).collect(),
        }
    }

    /// Sends each row to `outputs[hash(keys) % outputs.len()]`, for `operator`.
    pub fn hash(
        outputs: Vec<mpsc::Sender<Message>>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        operator: impl Into<String>,
    ) -> Self {
        Self {
            routes: vec![Route {
                partitioner: KeyPartitioner::new(keys, outputs.len(), operator),
                outputs,
            }],
        }
    }

    /// Sends `message` on. Returns `false` once a downstream subtask stopped (the job is
    /// ending; that subtask reports why).
    pub async fn send(&mut self, message: Message) -> Result<bool> {
        let Some((last, others)) = self.routes.split_last_mut() else {
            return Ok(true);
        };
        for route in others {
            if !route.send(message.clone()).await? {
                return Ok(false);
            }
        }
        last.send(message).await
    }

    /// Splits `batch` into the rows of each subtask of the (one) edge (subtasks that get
    /// none are left out).
    pub fn partition(&mut self, batch: &RecordBatch) -> Result<Vec<(usize, RecordBatch)>> {
        match self.routes.as_mut_slice() {
            [route] => route.partitioner.partition(batch),
            _ => Err(RuntimeError::Build(
                "an exchange along several edges has no one partitioning".into(),
            )),
        }
    }
}

impl Route {
    async fn send(&mut self, message: Message) -> Result<bool> {
        if self.outputs.len() == 1 {
            return Ok(self.outputs[0].send(message).await.is_ok());
        }
        match message {
            Message::Batch(batch) => {
                for (output, part) in self.partitioner.partition(&batch)? {
                    if self.outputs[output]
                        .send(Message::Batch(part))
                        .await
                        .is_err()
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            broadcast => {
                for output in &self.outputs {
                    if output.send(broadcast.clone()).await.is_err() {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

/// A subtask's inputs read as one stream: several groups of channels (one group per
/// logical input: one for a chain, two for a join), each channel the output of one
/// upstream subtask.
///
/// It yields `(group, message)`: rows as they come; a group's watermark when the minimum
/// over its channels advances; a group's end once all its channels ended; and each
/// barrier once every live channel of every group delivered it (as group 0).
pub struct MergedInputs {
    channels: futures::stream::SelectAll<futures::stream::BoxStream<'static, (usize, Message)>>,
    aligner: BarrierAligner,
    /// The group of each channel.
    group_of: Vec<usize>,
    /// The last watermark of each channel (`WATERMARK_END` once it ended).
    watermarks: Vec<Option<Watermark>>,
    /// The last watermark sent on for each group.
    emitted: Vec<Option<Watermark>>,
    /// Channels that said they are idle (and have sent nothing since).
    idle: Vec<bool>,
    /// Groups whose every channel is idle, and that said so downstream.
    group_idle: Vec<bool>,
    /// Channels of each group that have not ended.
    open: Vec<usize>,
    ready: VecDeque<(usize, Message)>,
}

impl MergedInputs {
    pub fn new(groups: Vec<Vec<mpsc::Receiver<Message>>>) -> Self {
        let mut group_of = Vec::new();
        let mut open = Vec::with_capacity(groups.len());
        let mut receivers = Vec::new();
        for (group, channels) in groups.into_iter().enumerate() {
            open.push(channels.len());
            for receiver in channels {
                group_of.push(group);
                receivers.push(receiver);
            }
        }
        let channels = futures::stream::select_all(receivers.into_iter().enumerate().map(
            |(index, receiver)| {
                futures::stream::unfold(receiver, move |mut receiver| async move {
                    let message = receiver.recv().await?;
                    Some(((index, message), receiver))
                })
                .boxed()
            },
        ));
        Self {
            channels,
            aligner: BarrierAligner::new(group_of.len()),
            watermarks: vec![None; group_of.len()],
            emitted: vec![None; open.len()],
            idle: vec![false; group_of.len()],
            group_idle: vec![false; open.len()],
            group_of,
            open,
            ready: VecDeque::new(),
        }
    }

    /// The next message and the group it belongs to; `None` once every channel closed.
    pub async fn next(&mut self) -> Option<(usize, Message)> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            let (channel, message) = self.channels.next().await?;
            self.aligner.offer(channel, message);
            while let Some(aligned) = self.aligner.next_ready() {
                self.accept(aligned);
            }
        }
    }

    fn accept(&mut self, aligned: Aligned) {
        let (channel, message) = match aligned {
            Aligned::Barrier(id) => {
                self.ready.push_back((0, Message::Barrier(id)));
                return;
            }
            Aligned::Message(channel, message) => (channel, message),
        };
        let group = self.group_of[channel];
        match message {
            Message::Watermark(w) => {
                self.active(channel);
                self.watermarks[channel] = Some(w);
                self.advance(group);
            }
            Message::Idle => {
                self.idle[channel] = true;
                self.advance(group);
                let channels = || (0..self.group_of.len()).filter(|&c| self.group_of[c] == group);
                if !self.group_idle[group] && channels().all(|c| self.idle[c]) {
                    self.group_idle[group] = true;
                    self.ready.push_back((group, Message::Idle));
                }
            }
            Message::End => {
                self.active(channel);
                self.watermarks[channel] = Some(WATERMARK_END);
                self.advance(group);
                self.open[group] -= 1;
                if self.open[group] == 0 {
                    self.ready.push_back((group, Message::End));
                }
            }
            batch @ Message::Batch(_) => {
                self.active(channel);
                self.ready.push_back((group, batch));
            }
            other => self.ready.push_back((group, other)),
        }
    }

    /// `channel` sent rows, a watermark or its end: it counts again.
    fn active(&mut self, channel: usize) {
        if std::mem::take(&mut self.idle[channel]) {
            self.group_idle[self.group_of[channel]] = false;
        }
    }

    /// Sends the group's watermark on if the minimum over its channels moved.
    fn advance(&mut self, group: usize) {
        let mut min = WATERMARK_END;
        let mut counted = false;
        for (channel, watermark) in self.watermarks.iter().enumerate() {
            if self.group_of[channel] != group || self.idle[channel] {
                continue;
            }
            counted = true;
            match watermark {
                Some(w) => min = min.min(*w),
                None => return, // a channel has not said where it stands yet
            }
        }
        if !counted {
            // Every channel is idle: as Flink's watermark valve does, the furthest any of
            // them got goes out, so what the last active one promised is not lost.
            let furthest = (0..self.group_of.len())
                .filter(|&c| self.group_of[c] == group)
                .filter_map(|c| self.watermarks[c])
                .max();
            match furthest {
                Some(w) => min = w,
                None => return,
            }
        }
        if self.emitted[group].is_some_and(|e| e >= min) {
            return;
        }
        self.emitted[group] = Some(min);
        self.ready.push_back((group, Message::Watermark(min)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn batch(values: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn values(message: &Message) -> Vec<i64> {
        match message {
            Message::Batch(b) => b.column(0).as_primitive::<Int64Type>().values().to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn equal_keys_reach_the_same_subtask_and_control_messages_reach_all() {
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel(16)).unzip();
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let mut exchange = Exchange::hash(senders, vec![key], "test");
        assert!(exchange
            .send(Message::Batch(batch((0..100).collect())))
            .await
            .unwrap());
        assert!(exchange
            .send(Message::Batch(batch((0..100).collect())))
            .await
            .unwrap());
        assert!(exchange.send(Message::Watermark(7)).await.unwrap());
        drop(exchange);
        let mut owner = std::collections::HashMap::new();
        let mut total = 0;
        for (subtask, receiver) in receivers.iter_mut().enumerate() {
            let mut watermarks = 0;
            while let Some(message) = receiver.recv().await {
                if let Message::Watermark(7) = message {
                    watermarks += 1;
                }
                for key in values(&message) {
                    total += 1;
                    // A key seen before went to the same subtask.
                    assert_eq!(*owner.entry(key).or_insert(subtask), subtask);
                }
            }
            assert_eq!(watermarks, 1, "subtask {subtask} got the watermark once");
        }
        assert_eq!(total, 200);
        // Spread over all three (100 keys).
        assert_eq!(
            owner
                .values()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );
    }

    /// The part a key lands in is `hash % count`, whichever way it is computed: it must not
    /// move between releases (checkpointed state and repartition topics rely on it).
    #[test]
    fn a_key_lands_in_its_hash_modulo_the_part_count() {
        let keys = batch((0..1000).map(|k| k * 7919).collect());
        let mut hashes = vec![0; keys.num_rows()];
        create_hashes(&[keys.column(0).clone()], &ROUTING_HASH, &mut hashes).unwrap();
        for count in [2, 3, 4, 8] {
            let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
            let mut partitioner = KeyPartitioner::new(vec![key], count, "test");
            let mut seen = 0;
            for (part, rows) in partitioner.partition(&keys).unwrap() {
                for value in rows.column(0).as_primitive::<Int64Type>().values() {
                    let row = (value / 7919) as usize;
                    assert_eq!(hashes[row] % count as u64, part as u64, "count {count}");
                    seen += 1;
                }
            }
            assert_eq!(seen, 1000);
        }
    }

    /// Sends `message` on `channel`, then what `merged` makes of it (read until it has
    /// nothing more for a moment).
    async fn after(
        merged: &mut MergedInputs,
        channel: &mpsc::Sender<Message>,
        message: Message,
    ) -> Vec<String> {
        channel.send(message).await.unwrap();
        let mut seen = Vec::new();
        let wait = std::time::Duration::from_millis(20);
        while let Ok(Some((group, message))) = tokio::time::timeout(wait, merged.next()).await {
            seen.push(match message {
                Message::Watermark(WATERMARK_END) => format!("{group}:wEND"),
                Message::Watermark(w) => format!("{group}:w{w}"),
                Message::Idle => format!("{group}:idle"),
                Message::End => format!("{group}:end"),
                _ => format!("{group}:?"),
            });
        }
        seen
    }

    #[tokio::test]
    async fn merged_inputs_take_the_minimum_watermark_and_end_once_all_ended() {
        let (a, a_rx) = mpsc::channel(16);
        let (b, b_rx) = mpsc::channel(16);
        let mut m = MergedInputs::new(vec![vec![a_rx, b_rx]]);
        assert!(after(&mut m, &a, Message::Watermark(10)).await.is_empty());
        assert_eq!(after(&mut m, &b, Message::Watermark(5)).await, ["0:w5"]);
        assert_eq!(after(&mut m, &b, Message::Watermark(20)).await, ["0:w10"]);
        assert_eq!(after(&mut m, &a, Message::End).await, ["0:w20"]);
        assert_eq!(after(&mut m, &b, Message::Watermark(30)).await, ["0:w30"]);
        assert_eq!(after(&mut m, &b, Message::End).await, ["0:wEND", "0:end"]);
    }

    #[tokio::test]
    async fn an_idle_channel_does_not_hold_the_others_back_until_it_speaks_again() {
        let (a, a_rx) = mpsc::channel(16);
        let (b, b_rx) = mpsc::channel(16);
        let mut m = MergedInputs::new(vec![vec![a_rx, b_rx]]);
        assert!(after(&mut m, &a, Message::Watermark(10)).await.is_empty());
        // b never said where it stands; once idle, it holds nothing back.
        assert_eq!(after(&mut m, &b, Message::Idle).await, ["0:w10"]);
        assert_eq!(after(&mut m, &a, Message::Watermark(20)).await, ["0:w20"]);
        // Back at 15 (behind what went out): it counts again, so a's 30 moves nothing.
        assert!(after(&mut m, &b, Message::Watermark(15)).await.is_empty());
        assert!(after(&mut m, &a, Message::Watermark(30)).await.is_empty());
        assert!(after(&mut m, &a, Message::Idle).await.is_empty());
        // Both idle: the furthest watermark goes out, and that they are idle, once.
        assert_eq!(after(&mut m, &b, Message::Idle).await, ["0:w30", "0:idle"]);
        assert!(after(&mut m, &b, Message::Idle).await.is_empty());
    }
}
