//! The contract test suite every EventStore implementation must pass (being written).
