//! Generated code for the public contract in `proto/`: the scheduling API
//! (`skileez.scheduling.v1`), the call events (`skileez.call.v1`), the
//! notifications API (`skileez.notifications.v1`) and the platform facts we
//! ingest (`skileez.contract.v1`, `skileez.user.v1`).

pub mod skileez {
    pub mod call {
        pub mod v1 {
            tonic::include_proto!("skileez.call.v1");
        }
    }
    pub mod contract {
        pub mod v1 {
            tonic::include_proto!("skileez.contract.v1");
        }
    }
    pub mod user {
        pub mod v1 {
            tonic::include_proto!("skileez.user.v1");
        }
    }
    pub mod notifications {
        pub mod v1 {
            tonic::include_proto!("skileez.notifications.v1");
        }
    }
    pub mod scheduling {
        pub mod v1 {
            tonic::include_proto!("skileez.scheduling.v1");
        }
    }
}

pub use skileez::call::v1 as call;
pub use skileez::contract::v1 as contract;
pub use skileez::notifications::v1 as notifications;
pub use skileez::scheduling::v1 as scheduling;
pub use skileez::user::v1 as user;

/// Encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/skileez_descriptor.bin"));
