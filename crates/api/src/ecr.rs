//! The ECR API (`AmazonEC2ContainerRegistry_V20150921.<Operation>`) on the JSON protocol: the
//! registry's ECR operation table ([`berth_registry::ecr_ops::ecr`]) behind the JSON codec. No
//! registry logic and no authorization here.

use std::sync::Arc;

use async_trait::async_trait;
use berth_model::wire::ecr;
use berth_registry::ecr_ops::ecr as table;
use berth_registry::{EcrError, Registry};
use bytes::Bytes;

use crate::awsjson::{JsonCodec, JsonService, RequestContext};
use crate::error::AwsError;

pub struct Ecr {
    registry: Arc<Registry>,
    control: Arc<berth_control::Control>,
}

impl Ecr {
    pub fn new(registry: Arc<Registry>, control: Arc<berth_control::Control>) -> Self {
        Ecr { registry, control }
    }
}

impl From<EcrError> for AwsError {
    fn from(e: EcrError) -> Self {
        AwsError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// The ECR operations berth implements.
pub const IMPLEMENTED: &[&str] = table::OPERATIONS;

#[async_trait]
impl JsonService for Ecr {
    fn name(&self) -> &'static str {
        "ecr"
    }
    fn target_prefix(&self) -> &'static str {
        ecr::TARGET_PREFIX
    }
    fn signing_name(&self) -> &'static str {
        ecr::SIGNING_NAME
    }
    fn operation(&self, op: &str) -> Option<&'static str> {
        ecr::OPERATIONS
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
        let (r, c) = (&*self.registry, &*self.control);
        match table::dispatch(r, c, &ctx.caller, op, JsonCodec(&body)).await {
            Some(r) => r,
            None => Err(AwsError::client(
                "UnsupportedFeatureException",
                format!("{op} is not supported by berth yet."),
            )),
        }
    }
}
