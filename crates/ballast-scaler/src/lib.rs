//! The shedding policy as a pure state machine, and the ScalerActor.
