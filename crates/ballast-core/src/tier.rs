//! Hardware tiers: the facts detected about a machine and the tier they put it in.
