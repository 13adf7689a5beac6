//! The ECS API (`AmazonEC2ContainerServiceV20141113.<Operation>`) on the JSON protocol: the
//! control plane's ECS operation table ([`berth_control::ecs_ops::ecs`]) behind the JSON codec.
//! Nothing here decides anything about clusters, tasks or who may touch them.

use std::sync::Arc;

use async_trait::async_trait;
use berth_control::ecs_ops::ecs as table;
use berth_control::{Control, ControlError};
use berth_model::wire::ecs;
use bytes::Bytes;

use crate::awsjson::{JsonCodec, JsonService, RequestContext};
use crate::error::AwsError;

pub struct Ecs {
    control: Arc<Control>,
}

impl Ecs {
    pub fn new(control: Arc<Control>) -> Self {
        Ecs { control }
    }
}

impl From<ControlError> for AwsError {
    fn from(e: ControlError) -> Self {
        AwsError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// The operations berth implements, for dispatch and for the coverage table in the README.
pub const IMPLEMENTED: &[&str] = table::OPERATIONS;

#[async_trait]
impl JsonService for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }
    fn target_prefix(&self) -> &'static str {
        ecs::TARGET_PREFIX
    }
    fn signing_name(&self) -> &'static str {
        ecs::SIGNING_NAME
    }
    fn operation(&self, op: &str) -> Option<&'static str> {
        ecs::OPERATIONS
            .iter()
            .find(|o| o.name == op)
            .map(|o| o.name)
    }

    async fn call(
        &self,
        op: &'static str,
        body: Bytes,
        ctx: &RequestContext,
    ) -> Result<Vec<u8>, AwsError> {
        let c = &*self.control;
        match table::dispatch(c, c, &ctx.caller, op, JsonCodec(&body)).await {
            Some(r) => r,
            None => Err(AwsError::client(
                "UnsupportedFeatureException",
                format!("{op} is not supported by berth yet."),
            )),
        }
    }
}
