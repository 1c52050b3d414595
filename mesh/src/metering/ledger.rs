//! The durable ledger: one record per executed request, in an embedded ACID store (redb) in the
//! node's data folder.
//!
//! A record is keyed by its charge id, which the entry node gives a request and which travels
//! with it through every handoff: inserting a record whose charge id is already there changes
//! nothing, so a request is charged once however often it is handed on or retried. Every
//! commit is durable (fsynced) before it returns. [`LedgerWriter`] runs commits on a thread of
//! its own and groups the records that arrive while one commit runs into the next (group
//! commit): durability per record, one fsync per group.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::usage::Day;

const RECORDS: TableDefinition<u128, &[u8]> = TableDefinition::new("records");

/// Records queued for the writer at most; beyond that, callers wait.
const WRITER_QUEUE: usize = 4096;

/// One executed, charged request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The charge id (hex): unique per request, the same through every handoff.
    pub charge_id: String,
    /// The client's request id (hex).
    pub request_id: String,
    /// The account charged.
    pub account: String,
    /// The key used (its id).
    pub key_id: String,
    /// The model.
    pub model: String,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Micro-Neurons charged.
    pub micro_neurons: u64,
    /// The node the client asked.
    pub entry: String,
    /// The node that ran it (this one).
    pub executor: String,
    /// When it was charged (Unix milliseconds).
    pub at_ms: u64,
    /// The UTC day it counts toward.
    pub day: Day,
}

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
#[error("ledger: {0}")]
pub struct LedgerError(String);

fn error(e: impl std::fmt::Display) -> LedgerError {
    LedgerError(e.to_string())
}

/// The charge id of a hex string (records store ids as hex for people and JSON tools).
pub fn charge_key(charge_id: &str) -> Result<u128, LedgerError> {
    u128::from_str_radix(charge_id, 16).map_err(|_| error(format!("bad charge id {charge_id}")))
}

/// An open ledger.
pub struct Ledger {
    db: redb::Database,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`; only one process may hold it.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let db = redb::Database::create(path).map_err(error)?;
        let write = db.begin_write().map_err(error)?;
        write.open_table(RECORDS).map_err(error)?;
        write.commit().map_err(error)?;
        Ok(Self { db })
    }

    /// Inserts the records that are not there yet, durably, in one transaction; says for each
    /// whether it was new.
    pub fn commit(&self, records: &[Record]) -> Result<Vec<bool>, LedgerError> {
        let write = self.db.begin_write().map_err(error)?;
        let mut new = Vec::with_capacity(records.len());
        {
            let mut table = write.open_table(RECORDS).map_err(error)?;
            for record in records {
                let key = charge_key(&record.charge_id)?;
                if table.get(key).map_err(error)?.is_some() {
                    new.push(false);
                    continue;
                }
                let bytes = serde_json::to_vec(record).map_err(error)?;
                table.insert(key, bytes.as_slice()).map_err(error)?;
                new.push(true);
            }
        }
        write.commit().map_err(error)?;
        Ok(new)
    }

    /// Every record, in charge-id order.
    pub fn records(&self) -> Result<Vec<Record>, LedgerError> {
        read_all(&self.db)
    }
}

fn read_all(db: &impl ReadableDatabase) -> Result<Vec<Record>, LedgerError> {
    let read = db.begin_read().map_err(error)?;
    let table = read.open_table(RECORDS).map_err(error)?;
    let mut records = Vec::new();
    for entry in table.iter().map_err(error)? {
        let (_, value) = entry.map_err(error)?;
        records.push(serde_json::from_slice(value.value()).map_err(error)?);
    }
    Ok(records)
}

/// Reads the ledger at `path` without a running node (the file is locked while one runs:
/// then `Err(None)`). A ledger left by a node that was killed is repaired first (opening it
/// for writing does that; the lock guarantees no node holds it), which recovers every
/// committed record.
pub fn read_stopped(path: &Path) -> Result<Vec<Record>, Option<LedgerError>> {
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => read_all(&db).map_err(Some),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(None),
        Err(redb::DatabaseError::RepairAborted) => match redb::Database::open(path) {
            Ok(db) => read_all(&db).map_err(Some),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(None),
            Err(e) => Err(Some(error(e))),
        },
        Err(e) => Err(Some(error(e))),
    }
}

/// A request to the writer thread.
type Job = (Record, oneshot::Sender<Result<bool, String>>);

/// Commits records on a thread of its own, grouping those that queue up meanwhile.
#[derive(Debug, Clone)]
pub struct LedgerWriter {
    queue: mpsc::Sender<Job>,
}

impl LedgerWriter {
    /// Starts the writer for `ledger`; it stops when every handle is dropped.
    pub fn start(ledger: std::sync::Arc<Ledger>) -> Self {
        let (queue, mut jobs) = mpsc::channel::<Job>(WRITER_QUEUE);
        std::thread::Builder::new()
            .name("ganglion-ledger".into())
            .spawn(move || {
                while let Some(first) = jobs.blocking_recv() {
                    let mut group = vec![first];
                    while let Ok(next) = jobs.try_recv() {
                        group.push(next);
                    }
                    let records: Vec<Record> = group.iter().map(|(r, _)| r.clone()).collect();
                    match ledger.commit(&records) {
                        Ok(new) => {
                            for ((_, reply), new) in group.into_iter().zip(new) {
                                let _ = reply.send(Ok(new));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "ledger commit failed");
                            for (_, reply) in group {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .expect("the OS can start a thread at node start-up");
        Self { queue }
    }

    /// Commits `record` durably; `Ok(false)` if its charge id was already there.
    pub async fn commit(&self, record: Record) -> Result<bool, LedgerError> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send((record, reply))
            .await
            .map_err(|_| error("writer stopped"))?;
        done.await
            .map_err(|_| error("writer stopped"))?
            .map_err(LedgerError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(charge: u128, micro: u64) -> Record {
        Record {
            charge_id: format!("{charge:x}"),
            request_id: "1".into(),
            account: "acme".into(),
            key_id: "0123456789abcdef".into(),
            model: "m".into(),
            input_tokens: 10,
            output_tokens: 5,
            micro_neurons: micro,
            entry: "a".into(),
            executor: "b".into(),
            at_ms: 1,
            day: 1,
        }
    }

    #[tokio::test]
    async fn a_charge_id_is_charged_once_and_records_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("ganglion-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // left by a run with the same process id
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ledger.redb");
        let _ = std::fs::remove_file(&path);
        {
            let ledger = std::sync::Arc::new(Ledger::open(&path).expect("open"));
            let writer = LedgerWriter::start(ledger.clone());
            assert!(writer.commit(record(7, 3)).await.expect("commit"));
            assert!(
                !writer.commit(record(7, 3)).await.expect("again"),
                "charged twice"
            );
            let many: Vec<_> = (100..164)
                .map(|i| {
                    let writer = writer.clone();
                    tokio::spawn(async move { writer.commit(record(i, 1)).await })
                })
                .collect();
            for job in many {
                assert!(job.await.expect("task").expect("commit"));
            }
            assert!(
                matches!(read_stopped(&path), Err(None)),
                "locked while open"
            );
            assert_eq!(ledger.records().expect("read").len(), 65);
        }
        // Reopened (as after a restart), or read by a process while no node runs.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let records = read_stopped(&path)
            .map_err(|e| format!("{e:?}"))
            .expect("read");
        assert_eq!(records.len(), 65);
        assert_eq!(records[0], record(7, 3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
