//! Generated code for the public contract in `proto/`: the scheduling API
//! (`skileez.scheduling.v1`) and the call events (`skileez.call.v1`).

pub mod skileez {
    pub mod call {
        pub mod v1 {
            tonic::include_proto!("skileez.call.v1");
        }
    }
    pub mod scheduling {
        pub mod v1 {
            tonic::include_proto!("skileez.scheduling.v1");
        }
    }
}

pub use skileez::call::v1 as call;
pub use skileez::scheduling::v1 as scheduling;

/// Encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/skileez_descriptor.bin"));
