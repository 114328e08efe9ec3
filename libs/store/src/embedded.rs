//! The embedded, durable event store of the single-process mode (SQLite in a data folder).
