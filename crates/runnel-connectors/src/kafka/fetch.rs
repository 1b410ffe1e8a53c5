//! [`BatchFetcher`]: takes a consumer's fetched records out of librdkafka many at a time
//! (`rd_kafka_consume_batch_queue`), where `BaseConsumer::poll` costs one queue pop, one
//! event object, one reference-counted allocation and two clock reads per record.
//!
//! This is the crate's only `unsafe` code: librdkafka's batch call has no safe wrapper in
//! `rdkafka`. Each block says what it relies on.

use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as ffi;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;

use super::records::{PolledRecords, RecordHeader, RecordParts};

/// Reads a consumer's message queue in batches.
///
/// Only for a consumer given its partitions by `assign` that commits synchronously (the
/// sources of this crate): its queue then carries fetched records and consumer errors
/// and nothing else. A group member's rebalance events and an asynchronous commit's
/// reply are served by `BaseConsumer::poll`, which must be used instead.
pub struct BatchFetcher {
    /// The consumer's queue: a reference of our own, released on drop.
    queue: NonNull<ffi::rd_kafka_queue_t>,
    /// Room for one batch of message pointers.
    slots: Vec<*mut ffi::rd_kafka_message_t>,
    /// Whether records' headers are copied (a table reading `METADATA FROM 'headers'`).
    headers: bool,
    /// Keeps the client, which owns the queue's messages, alive while the queue is used.
    _consumer: Arc<BaseConsumer>,
}

// SAFETY: librdkafka's queues are thread-safe, and the message pointers in `slots` are
// only used inside `take`, which destroys each before it returns.
unsafe impl Send for BatchFetcher {}

impl BatchFetcher {
    /// A fetcher of up to `batch` records at a time from `consumer`'s queue; `None` when
    /// the consumer has no queue of its own (it was created without a `group.id`).
    pub fn new(consumer: Arc<BaseConsumer>, batch: usize, headers: bool) -> Option<Self> {
        // SAFETY: the client pointer is live while `consumer` is; the call returns a new
        // reference to the queue (or null), which `Drop` releases.
        let queue = unsafe { ffi::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        Some(Self {
            queue: NonNull::new(queue)?,
            slots: vec![std::ptr::null_mut(); batch.max(1)],
            headers,
            _consumer: consumer,
        })
    }

    /// Waits up to `timeout` for a record, then copies it and every record already
    /// fetched, up to the batch size, into `into`. A consumer error among them (a
    /// broker's fetch error, an offset out of range) is returned after the records are
    /// copied; librdkafka keeps retrying by itself.
    pub fn fetch(&mut self, timeout: Duration, into: &mut PolledRecords) -> Option<String> {
        let mut error = None;
        // librdkafka's batch call waits until it has as many records as asked for, or
        // the timeout passes: wait for one, then take what is there without waiting.
        if self.take(timeout, 1, into, &mut error) > 0 {
            let rest = self.slots.len() - 1;
            self.take(Duration::ZERO, rest, into, &mut error);
        }
        error
    }

    /// One batch call for up to `max` messages; the number it returned.
    fn take(
        &mut self,
        timeout: Duration,
        max: usize,
        into: &mut PolledRecords,
        error: &mut Option<String>,
    ) -> usize {
        if max == 0 {
            return 0;
        }
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `queue` is a live queue reference and `slots` has room for `max` pointers.
        let taken = unsafe {
            ffi::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.slots.as_mut_ptr(),
                max.min(self.slots.len()),
            )
        };
        let Ok(taken) = usize::try_from(taken) else {
            // SAFETY: reads this thread's last librdkafka error; no pointers involved.
            let code = unsafe { ffi::rd_kafka_last_error() };
            error.get_or_insert_with(|| format!("consuming a batch failed: {code:?}"));
            return 0;
        };
        for &message in &self.slots[..taken] {
            // SAFETY: librdkafka filled the first `taken` slots with valid messages, each
            // ours until `rd_kafka_message_destroy`; nothing borrowed from one outlives
            // this iteration (`push_parts` copies what it keeps).
            unsafe {
                let m = &*message;
                if m.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    copy_record(m, self.headers, into);
                } else if m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                    let reason = c_text(ffi::rd_kafka_message_errstr(m));
                    error.get_or_insert_with(|| {
                        format!("partition {}: {reason} ({:?})", m.partition, m.err)
                    });
                }
                ffi::rd_kafka_message_destroy(message);
            }
        }
        taken
    }
}

impl Drop for BatchFetcher {
    fn drop(&mut self) {
        // SAFETY: releases the reference `new` took; the client is still alive (the
        // `_consumer` field drops after this).
        unsafe { ffi::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Copies message `m`, and its headers when `headers`, into `into`.
///
/// # Safety
/// `m` is a valid message without an error, not yet destroyed.
unsafe fn copy_record(m: &ffi::rd_kafka_message_t, headers: bool, into: &mut PolledRecords) {
    let mut timestamp_type = ffi::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    let timestamp = ffi::rd_kafka_message_timestamp(m, &mut timestamp_type);
    let timestamp = (timestamp != -1
        && timestamp_type != ffi::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
        .then_some(timestamp);
    let topic = CStr::from_ptr(ffi::rd_kafka_topic_name(m.rkt));
    let record = RecordParts {
        topic: &String::from_utf8_lossy(topic.to_bytes()),
        partition: m.partition,
        offset: m.offset,
        timestamp,
        key: bytes(m.key, m.key_len),
        payload: bytes(m.payload, m.len),
    };
    let mut read = Vec::new();
    if headers {
        let mut all = std::ptr::null_mut();
        if ffi::rd_kafka_message_headers(m, &mut all) == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            read = header_list(all);
        }
    }
    into.push_parts(record, read);
}

/// The headers of a message's header list.
///
/// # Safety
/// `all` is a valid header list owned by a message that outlives the result.
unsafe fn header_list<'a>(all: *const ffi::rd_kafka_headers_t) -> Vec<RecordHeader<'a>> {
    let mut read = Vec::new();
    for index in 0.. {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        if ffi::rd_kafka_header_get_all(all, index, &mut name, &mut value, &mut size)
            != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            break;
        }
        read.push((CStr::from_ptr(name).to_bytes(), bytes(value, size)));
    }
    read
}

/// `len` bytes at `data`, or `None` for a null pointer (a missing key or payload).
///
/// # Safety
/// A non-null `data` points to `len` readable bytes that outlive the result.
unsafe fn bytes<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    (!data.is_null()).then(|| std::slice::from_raw_parts(data.cast::<u8>(), len))
}

/// A C string librdkafka returned, as text (empty for null).
///
/// # Safety
/// A non-null `text` is a valid, NUL-terminated string.
unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    CStr::from_ptr(text).to_string_lossy().into_owned()
}
