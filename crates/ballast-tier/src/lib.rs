//! Hardware tier detection, tier profiles and the TierActor.
