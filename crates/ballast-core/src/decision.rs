//! Decisions of the scaler, with the inputs and rule behind each: what the decision log records.
