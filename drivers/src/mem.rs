//! In-memory link between two ports with seeded impairments (being written).
