//! The ECR operations around policies: lifecycle policies (put/get/delete, previews, and
//! applying them — periodically and whenever a policy is put) and repository policies
//! (set/get/delete, and enforcing their denials on pulls and pushes).

use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_model::wire::ecr::{
    DeleteLifecyclePolicyRequest, DeleteLifecyclePolicyResponse, DeleteRepositoryPolicyRequest,
    DeleteRepositoryPolicyResponse, GetLifecyclePolicyPreviewRequest,
    GetLifecyclePolicyPreviewResponse, GetLifecyclePolicyRequest, GetLifecyclePolicyResponse,
    GetRepositoryPolicyRequest, GetRepositoryPolicyResponse, LifecyclePolicyPreviewResult,
    LifecyclePolicyPreviewSummary, LifecyclePolicyRuleAction, PutLifecyclePolicyRequest,
    PutLifecyclePolicyResponse, SetRepositoryPolicyRequest, SetRepositoryPolicyResponse,
    StartLifecyclePolicyPreviewRequest, StartLifecyclePolicyPreviewResponse,
};

use crate::error::EcrError;
use crate::lifecycle::{Expiry, ImageInfo, Policy};
use crate::{PreviewRecord, Registry, keys};
use berth_auth::policy::{Policy as AccessPolicy, PolicyKind};

impl Registry {
    /// What a lifecycle policy would expire in `repo` right now.
    async fn lifecycle_decisions(&self, repo: &str, text: &str) -> Result<Vec<Expiry>, EcrError> {
        let policy = Policy::parse(text).map_err(EcrError::InvalidParameter)?;
        let images: Vec<ImageInfo> = self
            .images(repo)
            .await?
            .into_iter()
            .map(|(m, tags)| ImageInfo {
                digest: m.digest,
                tags,
                pushed_at: m.pushed_at,
            })
            .collect();
        Ok(policy.evaluate(&images, self.now().as_secs_f64()))
    }

    /// Apply `repo`'s lifecycle policy now. Returns how many images were expired.
    pub async fn run_lifecycle(&self, repo: &str) -> Result<usize, EcrError> {
        let (rec, _) = self.repo_record(Some(repo)).await?;
        let Some(text) = rec.lifecycle_policy else {
            return Ok(0);
        };
        let mut n = 0;
        for e in self.lifecycle_decisions(repo, &text).await? {
            match self.delete_manifest(repo, &e.image.digest).await {
                Ok(()) => n += 1,
                Err(err) if err.code == "MANIFEST_UNKNOWN" => {}
                Err(err) => return Err(EcrError::Server(err.message)),
            }
        }
        self.modify_repo(Some(repo), |r| {
            r.lifecycle_evaluated_at = Some(self.now().as_secs_f64());
            Ok(())
        })
        .await?;
        if n > 0 {
            tracing::info!(repo, expired = n, "lifecycle policy expired images");
        }
        Ok(n)
    }

    /// Apply every repository's lifecycle policy.
    pub async fn run_all_lifecycles(&self) -> Result<usize, EcrError> {
        let resp = self
            .store
            .range(berth_store::RangeRequest::prefix(keys::REPOS))
            .await?;
        let mut total = 0;
        for kv in resp.kvs {
            let rec: crate::RepoRecord = serde_json::from_slice(&kv.value)?;
            if rec.lifecycle_policy.is_some()
                && let Some(name) = rec.repo.repository_name.as_deref()
            {
                total += self.run_lifecycle(name).await?;
            }
        }
        Ok(total)
    }

    /// Every `every` while the registry lives: apply lifecycle policies, then collect
    /// garbage (links unneeded for an hour, uploads idle for a day); and, more often, expire
    /// idle upload sessions ([`Registry::spawn_upload_expiry`]).
    pub fn spawn_maintenance(this: &Arc<Registry>, every: Duration) {
        Registry::spawn_upload_expiry(this);
        let weak: Weak<Registry> = Arc::downgrade(this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                if let Err(e) = r.run_all_lifecycles().await {
                    tracing::warn!("lifecycle run failed: {e}");
                }
                if let Err(e) = r.gc(3600.0, 24 * 3600).await {
                    tracing::warn!("registry garbage collection failed: {e}");
                }
            }
        });
    }

    pub async fn put_lifecycle_policy(
        &self,
        req: PutLifecyclePolicyRequest,
    ) -> Result<PutLifecyclePolicyResponse, EcrError> {
        let text = req.lifecycle_policy_text.clone().unwrap_or_default();
        Policy::parse(&text).map_err(EcrError::InvalidParameter)?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.modify_repo(Some(&name), |r| {
            r.lifecycle_policy = Some(text.clone());
            Ok(())
        })
        .await?;
        // ECR applies policies within a day; berth applies a new one at once (and then
        // periodically), so its effect is visible immediately.
        self.run_lifecycle(&name).await?;
        Ok(PutLifecyclePolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            lifecycle_policy_text: Some(text),
        })
    }

    pub async fn get_lifecycle_policy(
        &self,
        req: GetLifecyclePolicyRequest,
    ) -> Result<GetLifecyclePolicyResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, _) = self.repo_record(Some(&name)).await?;
        let text = rec.lifecycle_policy.ok_or_else(|| {
            EcrError::LifecyclePolicyNotFound(format!(
                "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
                self.cfg.account_id
            ))
        })?;
        Ok(GetLifecyclePolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            lifecycle_policy_text: Some(text),
            last_evaluated_at: rec.lifecycle_evaluated_at,
        })
    }

    pub async fn delete_lifecycle_policy(
        &self,
        req: DeleteLifecyclePolicyRequest,
    ) -> Result<DeleteLifecyclePolicyResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let mut old = None;
        let mut evaluated = None;
        let account = self.cfg.account_id.clone();
        self.modify_repo(Some(&name), |r| {
            old = r.lifecycle_policy.take();
            evaluated = r.lifecycle_evaluated_at;
            if old.is_none() {
                return Err(EcrError::LifecyclePolicyNotFound(format!(
                    "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{account}'"
                )));
            }
            Ok(())
        })
        .await?;
        Ok(DeleteLifecyclePolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            lifecycle_policy_text: old,
            last_evaluated_at: evaluated,
        })
    }

    pub async fn start_lifecycle_policy_preview(
        &self,
        req: StartLifecyclePolicyPreviewRequest,
    ) -> Result<StartLifecyclePolicyPreviewResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, _) = self.repo_record(Some(&name)).await?;
        let text = match req.lifecycle_policy_text.clone().or(rec.lifecycle_policy) {
            Some(t) => t,
            None => {
                return Err(EcrError::LifecyclePolicyNotFound(format!(
                    "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
                    self.cfg.account_id
                )));
            }
        };
        let results: Vec<LifecyclePolicyPreviewResult> = self
            .lifecycle_decisions(&name, &text)
            .await?
            .into_iter()
            .map(|e| LifecyclePolicyPreviewResult {
                image_tags: Some(e.image.tags),
                image_digest: Some(e.image.digest),
                image_pushed_at: Some(e.image.pushed_at),
                action: Some(LifecyclePolicyRuleAction {
                    r#type: Some("EXPIRE".into()),
                    target_storage_class: None,
                }),
                applied_rule_priority: Some(e.rule_priority),
                storage_class: Some("STANDARD".into()),
            })
            .collect();
        let preview = PreviewRecord {
            policy_text: text.clone(),
            status: "COMPLETE".into(),
            results,
        };
        self.modify_repo(Some(&name), |r| {
            r.preview = Some(preview.clone());
            Ok(())
        })
        .await?;
        Ok(StartLifecyclePolicyPreviewResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            lifecycle_policy_text: Some(text),
            status: Some("COMPLETE".into()),
        })
    }

    pub async fn get_lifecycle_policy_preview(
        &self,
        req: GetLifecyclePolicyPreviewRequest,
    ) -> Result<GetLifecyclePolicyPreviewResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, _) = self.repo_record(Some(&name)).await?;
        let p = rec.preview.ok_or_else(|| {
            EcrError::LifecyclePolicyPreviewNotFound(format!(
                "There is no preview of a lifecycle policy for the repository with name '{name}' in the registry with id '{}'",
                self.cfg.account_id
            ))
        })?;
        let status = req.filter.as_ref().and_then(|f| f.tag_status.clone());
        let ids = req.image_ids.clone().unwrap_or_default();
        let results: Vec<LifecyclePolicyPreviewResult> = p
            .results
            .iter()
            .filter(|r| {
                let tagged = r.image_tags.as_ref().is_some_and(|t| !t.is_empty());
                match status.as_deref() {
                    Some("TAGGED") => tagged,
                    Some("UNTAGGED") => !tagged,
                    _ => true,
                }
            })
            .filter(|r| {
                ids.is_empty()
                    || ids.iter().any(|i| {
                        i.image_digest
                            .as_ref()
                            .is_none_or(|d| Some(d) == r.image_digest.as_ref())
                            && i.image_tag.as_ref().is_none_or(|t| {
                                r.image_tags.as_ref().is_some_and(|ts| ts.contains(t))
                            })
                    })
            })
            .cloned()
            .collect();
        let total = p.results.len() as i32;
        let (page, next) = crate::ecr::paginate(
            results,
            req.next_token.as_deref(),
            req.max_results,
            100,
            100,
        )?;
        Ok(GetLifecyclePolicyPreviewResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            lifecycle_policy_text: Some(p.policy_text),
            status: Some(p.status),
            next_token: next,
            preview_results: Some(page),
            summary: Some(LifecyclePolicyPreviewSummary {
                expiring_image_total_count: Some(total),
                transitioning_image_total_counts: None,
            }),
        })
    }

    /// SetRepositoryPolicy. `locks_out` says whether a policy would deny the caller
    /// `ecr:SetRepositoryPolicy` (the control plane evaluates it as it will on every request).
    pub async fn set_repository_policy(
        &self,
        req: SetRepositoryPolicyRequest,
        locks_out: impl FnOnce(&AccessPolicy) -> bool,
    ) -> Result<SetRepositoryPolicyResponse, EcrError> {
        let text = req.policy_text.clone().unwrap_or_default();
        let bad = |m: &str| {
            EcrError::InvalidParameter(format!(
                "Invalid parameter at 'PolicyText' failed to satisfy constraint: '{m}'"
            ))
        };
        if text.len() > 10240 {
            return Err(bad("policy text is longer than 10240 characters"));
        }
        let p = AccessPolicy::parse(&text, PolicyKind::Resource).map_err(|m| bad(&m))?;
        // Lock-out protection: refuse a policy that would stop the caller from changing it
        // again, unless forced.
        if locks_out(&p) && !req.force.unwrap_or(false) {
            return Err(EcrError::InvalidParameter(
                "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'The repository policy would prevent the caller from performing SetRepositoryPolicy in the future; set force to true to apply it anyway.'".into(),
            ));
        }
        let name = req.repository_name.clone().unwrap_or_default();
        self.modify_repo(Some(&name), |r| {
            r.policy = Some(text.clone());
            Ok(())
        })
        .await?;
        Ok(SetRepositoryPolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            policy_text: Some(text),
        })
    }

    fn no_policy(&self, name: &str) -> EcrError {
        EcrError::RepositoryPolicyNotFound(format!(
            "Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'",
            self.cfg.account_id
        ))
    }

    pub async fn get_repository_policy(
        &self,
        req: GetRepositoryPolicyRequest,
    ) -> Result<GetRepositoryPolicyResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, _) = self.repo_record(Some(&name)).await?;
        let text = rec.policy.ok_or_else(|| self.no_policy(&name))?;
        Ok(GetRepositoryPolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            policy_text: Some(text),
        })
    }

    pub async fn delete_repository_policy(
        &self,
        req: DeleteRepositoryPolicyRequest,
    ) -> Result<DeleteRepositoryPolicyResponse, EcrError> {
        let name = req.repository_name.clone().unwrap_or_default();
        let mut old = None;
        let missing = self.no_policy(&name);
        self.modify_repo(Some(&name), |r| {
            old = r.policy.take();
            if old.is_none() {
                return Err(missing.clone());
            }
            Ok(())
        })
        .await?;
        Ok(DeleteRepositoryPolicyResponse {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name),
            policy_text: old,
        })
    }
}
