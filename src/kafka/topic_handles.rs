//! Producing by topic handle.
//!
//! rust-rdkafka's `BaseProducer::send` names the topic on every call: it
//! allocates a `CString` of the name, and librdkafka then finds the topic by
//! a linear `memcmp` scan over every topic the client knows and takes and
//! drops a reference to it. With ~75 output topics that was 13% of the
//! router thread (BENCHMARKS.md). [`TopicHandles`] keeps one librdkafka
//! topic handle per output topic and hands records to `rd_kafka_producev`
//! with `RD_KAFKA_VTYPE_RKT`; everything else is what `BaseProducer::send`
//! does: the same flags (the payload is copied by librdkafka, as before),
//! the producer's default topic configuration (partitioner included), and
//! the same delivery opaque, so the producer context's delivery callback is
//! unchanged.
//!
//! Handles are found by the address of the topic name's `Arc<str>` (a
//! cached routing plan hands out the same one for every record of its
//! stream): one word hashed per record, not the name. Each `Arc` is held
//! with its handle, so its address is not reused while it is remembered; a
//! new `Arc` of a known name gets its own handle (librdkafka hands back the
//! same topic with one more reference). The names that got a handle are
//! kept for [`TopicHandles::take_new_topics`], so the caller learns of a
//! topic it has not sent to before without a second lookup per record.

use crate::pipeline::dedup::IdentityHasher;
use rdkafka::bindings as rdsys;
use rdkafka::error::{IsError, KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::util::IntoOpaque;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::hash::BuildHasherDefault;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Handles kept at most; producers name the topics, so past this the map
/// starts over (a handle is cheap to make again; records in flight hold
/// their own references).
const MAX_HANDLES: usize = 10_000;

/// What [`TopicHandles::send`] returns: the record back with the error.
pub type SendResult<'a, K, P, O> = Result<(), (KafkaError, BaseRecord<'a, K, P, O>)>;

/// A librdkafka topic handle: one application reference, released on drop.
struct Handle(NonNull<rdsys::rd_kafka_topic_t>);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is released
        // once; `TopicHandles` drops its handles before its producer.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// Handles by the address of their name's `Arc`, each with that `Arc`.
type ByAddress = HashMap<u64, (Arc<str>, Handle), BuildHasherDefault<IdentityHasher>>;

/// A producer and its topic handles, for one thread.
pub struct TopicHandles<C: ProducerContext + 'static> {
    // Declared first: handles are released before the producer can be.
    handles: RefCell<ByAddress>,
    /// Names that got a handle since the last [`TopicHandles::take_new_topics`].
    new_topics: RefCell<Vec<Arc<str>>>,
    producer: Arc<BaseProducer<C>>,
}

impl<C: ProducerContext + 'static> TopicHandles<C> {
    /// No handles yet, over `producer`.
    pub fn new(producer: Arc<BaseProducer<C>>) -> Self {
        TopicHandles {
            handles: RefCell::new(HashMap::default()),
            new_topics: RefCell::default(),
            producer,
        }
    }

    /// The producer the records go to.
    pub fn producer(&self) -> &Arc<BaseProducer<C>> {
        &self.producer
    }

    /// Topic handles held.
    pub fn len(&self) -> usize {
        self.handles.borrow().len()
    }

    /// Whether no handle is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names that got a handle (were sent to by a new `Arc`, or after
    /// the map started over) since the last call, oldest first; `None`
    /// when there are none (the case of nearly every record).
    #[inline]
    pub fn take_new_topics(&self) -> Option<Vec<Arc<str>>> {
        if self.new_topics.borrow().is_empty() {
            return None;
        }
        Some(std::mem::take(&mut *self.new_topics.borrow_mut()))
    }

    /// Enqueues `record` to `topic` (the name the record carries) like
    /// `BaseProducer::send`, with the same result: on error the record comes
    /// back, with its headers still owned by it.
    #[allow(clippy::result_large_err)] // the same shape as BaseProducer::send
    pub fn send<'a, K, P>(
        &self,
        topic: &Arc<str>,
        mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    ) -> SendResult<'a, K, P, C::DeliveryOpaque>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        debug_assert_eq!(&**topic, record.topic, "the record's own topic");
        let rkt = match self.handle(topic) {
            Ok(rkt) => rkt,
            Err(e) => return Err((e, record)),
        };
        let (payload_ptr, payload_len) = bytes(record.payload);
        let (key_ptr, key_len) = bytes(record.key);
        let headers_ptr = record.headers.as_ref().map_or(ptr::null_mut(), native);
        let opaque_ptr = record.delivery_opaque.into_ptr();
        // SAFETY: every pointer is valid for the call: the handle is held by
        // `self.handles`, payload and key are borrowed by `record` and copied
        // by librdkafka (RD_KAFKA_MSG_F_COPY), and the headers are taken
        // over by librdkafka only on success (forgotten below).
        let err = unsafe {
            rdsys::rd_kafka_producev(
                self.producer.client().native_ptr(),
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT,
                rkt,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
                record.partition.unwrap_or(-1),
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::RD_KAFKA_MSG_F_COPY,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
                payload_ptr,
                payload_len,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY,
                key_ptr,
                key_len,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE,
                opaque_ptr,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TIMESTAMP,
                record.timestamp.unwrap_or(0),
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS,
                headers_ptr,
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_END,
            )
        };
        if err.is_error() {
            // SAFETY: librdkafka did not take the opaque; it is ours again.
            record.delivery_opaque = unsafe { C::DeliveryOpaque::from_ptr(opaque_ptr) };
            let code: RDKafkaErrorCode = err.into();
            return Err((KafkaError::MessageProduction(code), record));
        }
        // librdkafka owns the headers now.
        std::mem::forget(record.headers);
        Ok(())
    }

    /// Enqueues `record` by its topic's name (`BaseProducer::send`), for
    /// writes whose name is not held in an `Arc` (retries).
    #[allow(clippy::result_large_err)] // the same shape as BaseProducer::send
    pub fn send_by_name<'a, K, P>(
        &self,
        record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    ) -> SendResult<'a, K, P, C::DeliveryOpaque>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.producer.send(record)
    }

    /// The handle of `topic`, made the first time this `Arc` is seen.
    #[inline]
    fn handle(&self, topic: &Arc<str>) -> Result<*mut rdsys::rd_kafka_topic_t, KafkaError> {
        let key = address(topic);
        if let Some((_, h)) = self.handles.borrow().get(&key) {
            return Ok(h.0.as_ptr());
        }
        self.new_handle(key, topic)
    }

    #[cold]
    fn new_handle(
        &self,
        key: u64,
        topic: &Arc<str>,
    ) -> Result<*mut rdsys::rd_kafka_topic_t, KafkaError> {
        let name = CString::new(&**topic).map_err(KafkaError::from)?;
        // SAFETY: a valid client and name; a null configuration means the
        // producer's default topic configuration, as `send` by name uses.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(
                self.producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        let Some(rkt) = NonNull::new(rkt) else {
            // SAFETY: reads this thread's last librdkafka error.
            let code: RDKafkaErrorCode = unsafe { rdsys::rd_kafka_last_error() }.into();
            return Err(KafkaError::MessageProduction(code));
        };
        let mut handles = self.handles.borrow_mut();
        if handles.len() >= MAX_HANDLES {
            handles.clear(); // records in flight hold their own references
        }
        handles.insert(key, (topic.clone(), Handle(rkt)));
        self.new_topics.borrow_mut().push(topic.clone());
        Ok(rkt.as_ptr())
    }
}

/// An `Arc`'s address, spread for the identity hasher: how a topic name
/// held in an `Arc` is found without hashing the name.
#[inline]
fn address(topic: &Arc<str>) -> u64 {
    (Arc::as_ptr(topic) as *const u8 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn bytes(b: Option<&(impl ToBytes + ?Sized)>) -> (*mut c_void, usize) {
    match b.map(ToBytes::to_bytes) {
        None => (ptr::null_mut(), 0),
        Some(b) => (b.as_ptr() as *mut c_void, b.len()),
    }
}

/// The `rd_kafka_headers_t` behind `headers`: rust-rdkafka's
/// `BorrowedHeaders` is that very pointer, reinterpreted.
fn native(headers: &OwnedHeaders) -> *mut rdsys::rd_kafka_headers_t {
    let borrowed: &BorrowedHeaders = headers.as_borrowed();
    borrowed as *const BorrowedHeaders as *mut rdsys::rd_kafka_headers_t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::ClientConfig;
    use std::time::{Duration, Instant};

    #[test]
    fn one_handle_per_arc_and_every_record_lands_on_its_topic() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("out.a", 1, 1).unwrap();
        cluster.create_topic("out.b", 1, 1).unwrap();
        let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let handles = TopicHandles::new(Arc::new(producer));
        let (a, a_again, b): (Arc<str>, Arc<str>, Arc<str>) =
            ("out.a".into(), "out.a".into(), "out.b".into());
        let sends = [(&a, "1"), (&a, "2"), (&a_again, "3"), (&b, "4")];
        for (topic, payload) in sends {
            let rec = BaseRecord::<str, str>::to(topic).payload(payload).key("k");
            assert!(handles.send(topic, rec).is_ok());
        }
        let by_name = BaseRecord::<str, str>::to("out.b").payload("5").key("k");
        assert!(handles.send_by_name(by_name).is_ok());
        assert_eq!(handles.len(), 3, "one handle per Arc, not per record");
        let new = handles.take_new_topics().expect("three new handles");
        let by_arc = |n: &[Arc<str>], t: &Arc<str>| n.iter().any(|x| Arc::ptr_eq(x, t));
        assert!(new.len() == 3 && by_arc(&new, &a) && by_arc(&new, &a_again) && by_arc(&new, &b));
        assert!(
            handles.take_new_topics().is_none(),
            "each new topic is told once"
        );
        let again = BaseRecord::<str, str>::to(&a).payload("6").key("k");
        assert!(handles.send(&a, again).is_ok());
        assert!(
            handles.take_new_topics().is_none(),
            "a known Arc is not new"
        );
        handles.producer().flush(Duration::from_secs(10)).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "handles")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["out.a", "out.b"]).unwrap();
        let mut got: Vec<(String, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 6 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got.push((m.topic().to_string(), payload));
            }
        }
        got.sort();
        let want: Vec<(String, String)> = [("out.a", "1"), ("out.a", "2"), ("out.a", "3")]
            .into_iter()
            .chain([("out.a", "6"), ("out.b", "4"), ("out.b", "5")])
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_native_headers_pointer_is_the_owned_headers() {
        let h = OwnedHeaders::new()
            .insert(Header {
                key: "a",
                value: Some("1"),
            })
            .insert(Header {
                key: "b",
                value: Some("22"),
            });
        // SAFETY: `native` must be the live rd_kafka_headers_t of `h`.
        let n = unsafe { rdsys::rd_kafka_header_cnt(native(&h)) };
        assert_eq!(n, h.count());
        assert_eq!(n, 2);
    }
}
