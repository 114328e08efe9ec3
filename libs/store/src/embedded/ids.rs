//! The writer's memory of interned ids, so a commit does not look a document's or a client's id up
//! in the database for every event (two index look-ups per event, a tenth of a commit's CPU).
//!
//! Ids are never taken back (a deleted document keeps its id for its next life) and a name's id
//! never changes, so a remembered id stays right, also when other stores or processes write the
//! same file. Only ids of committed transactions are remembered: an id handed out inside a
//! transaction that is rolled back is handed out again, maybe to another name.

use std::collections::HashMap;

use rusqlite::Connection;

use super::tiers;
use crate::StoreError;

/// Names remembered per kind before the memory starts over: a bound on the writer's memory when
/// clients come and go for months.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
pub(super) struct IdCache {
    docs: HashMap<Box<str>, i64>,
    clients: HashMap<Box<str>, i64>,
    /// Ids looked up or handed out by the transaction in progress, remembered once it commits.
    staged: Vec<(Kind, Box<str>, i64)>,
}

#[derive(Clone, Copy)]
enum Kind {
    Doc,
    Client,
}

impl IdCache {
    /// Starts a transaction: forgets what a transaction that did not commit staged.
    pub fn begin(&mut self) {
        self.staged.clear();
    }

    /// The transaction committed: its ids are remembered.
    pub fn committed(&mut self) {
        for (kind, name, id) in self.staged.drain(..) {
            let map = match kind {
                Kind::Doc => &mut self.docs,
                Kind::Client => &mut self.clients,
            };
            if map.len() >= MAX_REMEMBERED {
                map.clear();
            }
            map.insert(name, id);
        }
    }

    /// The id of a document name inside the transaction on `conn`, handed out if it has none.
    pub fn doc(&mut self, conn: &Connection, name: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.docs.get(name) {
            return Ok(id);
        }
        let id = tiers::intern_doc(conn, name)?;
        self.staged.push((Kind::Doc, name.into(), id));
        Ok(id)
    }

    /// The id of a client name inside the transaction on `conn`, handed out if it has none.
    pub fn client(&mut self, conn: &Connection, name: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.clients.get(name) {
            return Ok(id);
        }
        let id = tiers::intern_client(conn, name)?;
        self.staged.push((Kind::Client, name.into(), id));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE doc_ids (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
             CREATE TABLE client_ids (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);",
        )
        .unwrap();
        conn
    }

    #[test]
    fn an_id_handed_out_by_a_rolled_back_transaction_is_not_remembered() {
        let mut conn = conn();
        let mut ids = IdCache::default();
        ids.begin();
        let tx = conn.transaction().unwrap();
        let lost = ids.doc(&tx, "a").unwrap();
        drop(tx); // rolled back
        ids.begin();
        let tx = conn.transaction().unwrap();
        let b = ids.doc(&tx, "b").unwrap();
        assert_eq!(b, lost, "the rolled-back id is handed out again, to another name");
        tx.commit().unwrap();
        ids.committed();
        // Without the table, only remembered ids can be answered: "b"'s, not the rolled-back "a"'s
        // (remembered, it would now name "b"'s row).
        conn.execute_batch("DROP TABLE doc_ids").unwrap();
        assert_eq!(ids.doc(&conn, "b").unwrap(), b);
        assert!(ids.doc(&conn, "a").is_err(), "the rolled-back id of \"a\" was remembered");
    }

    #[test]
    fn documents_and_clients_have_ids_of_their_own() {
        let mut conn = conn();
        let mut ids = IdCache::default();
        ids.begin();
        let tx = conn.transaction().unwrap();
        let (doc, client) = (ids.doc(&tx, "x").unwrap(), ids.client(&tx, "x").unwrap());
        tx.commit().unwrap();
        ids.committed();
        assert_eq!((ids.doc(&conn, "x").unwrap(), ids.client(&conn, "x").unwrap()), (doc, client));
    }
}
