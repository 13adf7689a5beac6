//! The ECR control API over the registry: repositories, images (list, describe, get, delete,
//! put), tag mutability, authorization tokens, layer availability and resource tags.

use berth_model::wire::ecr::{
    AuthorizationData, BatchCheckLayerAvailabilityRequest, BatchCheckLayerAvailabilityResponse,
    BatchDeleteImageRequest, BatchDeleteImageResponse, BatchGetImageRequest, BatchGetImageResponse,
    CreateRepositoryRequest, CreateRepositoryResponse, DeleteRepositoryRequest,
    DeleteRepositoryResponse, DescribeImagesRequest, DescribeImagesResponse,
    DescribeRepositoriesRequest, DescribeRepositoriesResponse, EncryptionConfiguration,
    GetAuthorizationTokenRequest, GetAuthorizationTokenResponse, Image, ImageDetail, ImageFailure,
    ImageIdentifier, ImageScanningConfiguration, Layer, LayerFailure, ListImagesRequest,
    ListImagesResponse, ListTagsForResourceRequest, ListTagsForResourceResponse, PutImageRequest,
    PutImageResponse, PutImageTagMutabilityRequest, PutImageTagMutabilityResponse, Repository, Tag,
    TagResourceRequest, TagResourceResponse, UntagResourceRequest, UntagResourceResponse,
};
use berth_store::{Compare, Op, RangeRequest, Txn};

use crate::digest::{self, Digest};
use crate::error::{DistError, EcrError};
use crate::{ManifestRecord, Registry, RepoRecord, keys, token};

fn not_found(name: &str, account: &str) -> EcrError {
    EcrError::RepositoryNotFound(format!(
        "The repository with name '{name}' does not exist in the registry with id '{account}'"
    ))
}

/// The tag rules ([`berth_model::tags`]) in ECR's words.
fn check_tags(tags: &[Tag]) -> Result<(), EcrError> {
    use berth_model::tags::TagRule;
    let pairs = tags.iter().map(|t| {
        (
            t.key.as_deref().unwrap_or_default(),
            t.value.as_deref().unwrap_or_default(),
        )
    });
    berth_model::tags::check(pairs).map_err(|rule| {
        EcrError::InvalidTagParameter(match rule {
            TagRule::TooMany => "A repository can have at most 50 tags.".into(),
            TagRule::KeyLength(k) | TagRule::ReservedPrefix(k) => {
                format!("Invalid tag key '{k}': 1-128 characters, not starting with 'aws:'.")
            }
            TagRule::ValueLength(_) => "Tag values are at most 256 characters.".into(),
        })
    })
}

fn map_dist(e: DistError) -> EcrError {
    match e.code {
        "NAME_UNKNOWN" => EcrError::RepositoryNotFound(e.message),
        "NAME_INVALID" | "MANIFEST_INVALID" | "DIGEST_INVALID" | "SIZE_INVALID" => {
            EcrError::InvalidParameter(e.message)
        }
        "MANIFEST_BLOB_UNKNOWN" => EcrError::LayersNotFound(e.message),
        "TAG_INVALID" if e.message.contains("immutable") => {
            EcrError::ImageTagAlreadyExists(e.message)
        }
        "TAG_INVALID" => EcrError::InvalidParameter(e.message),
        "MANIFEST_UNKNOWN" => EcrError::ImageNotFound(e.message),
        _ => EcrError::Server(e.message),
    }
}

impl Registry {
    fn check_registry_id(&self, id: Option<&str>) -> Result<(), EcrError> {
        match id {
            Some(i) if i != self.cfg.account_id => Err(EcrError::InvalidParameter(format!(
                "Invalid parameter at 'registryId' failed to satisfy constraint: registry {i} is not this registry ({})",
                self.cfg.account_id
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) async fn create_repository_record(
        &self,
        name: &str,
        req: Option<&CreateRepositoryRequest>,
        tags: Vec<Tag>,
    ) -> Result<RepoRecord, EcrError> {
        let repo = Repository {
            repository_arn: Some(self.repo_arn(name)),
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(name.to_string()),
            repository_uri: Some(self.repo_uri(name)),
            created_at: Some(self.now().as_secs_f64()),
            image_tag_mutability: Some(
                req.and_then(|r| r.image_tag_mutability.clone())
                    .unwrap_or_else(|| "MUTABLE".into()),
            ),
            image_tag_mutability_exclusion_filters: req
                .and_then(|r| r.image_tag_mutability_exclusion_filters.clone()),
            image_scanning_configuration: Some(
                req.and_then(|r| r.image_scanning_configuration.clone())
                    .unwrap_or(ImageScanningConfiguration {
                        scan_on_push: Some(false),
                    }),
            ),
            encryption_configuration: Some(
                req.and_then(|r| r.encryption_configuration.clone())
                    .unwrap_or(EncryptionConfiguration {
                        encryption_type: Some("AES256".into()),
                        kms_key: None,
                    }),
            ),
        };
        let rec = RepoRecord {
            repo,
            tags,
            lifecycle_policy: None,
            lifecycle_evaluated_at: None,
            policy: None,
            preview: None,
        };
        let key = keys::repo(name);
        let r = self
            .store
            .txn(Txn {
                compare: vec![Compare::missing(key.clone())],
                success: vec![Op::put(key, serde_json::to_vec(&rec)?)],
                failure: vec![],
            })
            .await?;
        if !r.succeeded {
            return Err(EcrError::RepositoryAlreadyExists(format!(
                "The repository with name '{name}' already exists in the registry with id '{}'",
                self.cfg.account_id
            )));
        }
        Ok(rec)
    }

    pub(crate) async fn repo_record(
        &self,
        name: Option<&str>,
    ) -> Result<(RepoRecord, i64), EcrError> {
        let name = name.unwrap_or_default();
        if !digest::valid_repo_name(name) {
            return Err(EcrError::InvalidParameter(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*''; got '{name}'"
            )));
        }
        self.get_json::<RepoRecord>(&keys::repo(name))
            .await?
            .ok_or_else(|| not_found(name, &self.cfg.account_id))
    }

    pub(crate) async fn modify_repo(
        &self,
        name: Option<&str>,
        mut f: impl FnMut(&mut RepoRecord) -> Result<(), EcrError>,
    ) -> Result<RepoRecord, EcrError> {
        loop {
            let (mut rec, rev) = self.repo_record(name).await?;
            f(&mut rec)?;
            let key = keys::repo(name.unwrap_or_default());
            let r = self
                .store
                .txn(Txn {
                    compare: vec![Compare::mod_revision_is(key.clone(), rev)],
                    success: vec![Op::put(key, serde_json::to_vec(&rec)?)],
                    failure: vec![],
                })
                .await?;
            if r.succeeded {
                return Ok(rec);
            }
        }
    }

    pub async fn create_repository(
        &self,
        req: CreateRepositoryRequest,
    ) -> Result<CreateRepositoryResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        if !digest::valid_repo_name(&name) || name.len() < 2 {
            return Err(EcrError::InvalidParameter(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*' and be 2-256 characters'; got '{name}'"
            )));
        }
        let tags = req.tags.clone().unwrap_or_default();
        check_tags(&tags)?;
        if let Some(m) = &req.image_tag_mutability
            && m != "MUTABLE"
            && m != "IMMUTABLE"
        {
            return Err(EcrError::InvalidParameter(format!(
                "imageTagMutability {m} is not supported; use MUTABLE or IMMUTABLE."
            )));
        }
        let rec = self
            .create_repository_record(&name, Some(&req), tags)
            .await?;
        Ok(CreateRepositoryResponse {
            repository: Some(rec.repo),
        })
    }

    pub async fn describe_repositories(
        &self,
        req: DescribeRepositoriesRequest,
    ) -> Result<DescribeRepositoriesResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        if let Some(names) = &req.repository_names {
            if req.next_token.is_some() || req.max_results.is_some() {
                return Err(EcrError::InvalidParameter(
                    "repositoryNames cannot be used with nextToken or maxResults.".into(),
                ));
            }
            let mut out = Vec::new();
            for n in names {
                out.push(self.repo_record(Some(n)).await?.0.repo);
            }
            return Ok(DescribeRepositoriesResponse {
                repositories: Some(out),
                next_token: None,
            });
        }
        let limit = max_results(req.max_results, 100, 1000)?;
        let after = req.next_token.as_deref().map(decode_token).transpose()?;
        let resp = self.store.range(RangeRequest::prefix(keys::REPOS)).await?;
        let mut out = Vec::new();
        let mut next = None;
        for kv in resp.kvs {
            let name = String::from_utf8_lossy(&kv.key[keys::REPOS.len()..]).into_owned();
            if after.as_deref().is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            if out.len() == limit {
                next = out
                    .last()
                    .and_then(|r: &Repository| r.repository_name.clone())
                    .map(|n| encode_token(&n));
                break;
            }
            let rec: RepoRecord = serde_json::from_slice(&kv.value)?;
            out.push(rec.repo);
        }
        Ok(DescribeRepositoriesResponse {
            repositories: Some(out),
            next_token: next,
        })
    }

    pub async fn delete_repository(
        &self,
        req: DeleteRepositoryRequest,
    ) -> Result<DeleteRepositoryResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, rev) = self.repo_record(Some(&name)).await?;
        let manifests = self.manifests_of(&name).await.map_err(map_dist)?;
        if !manifests.is_empty() && !req.force.unwrap_or(false) {
            return Err(EcrError::RepositoryNotEmpty(format!(
                "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                self.cfg.account_id
            )));
        }
        let range = |p: String| {
            let r = RangeRequest::prefix(p);
            Op::DeleteRange {
                start: r.start,
                end: r.end,
            }
        };
        let r = self
            .store
            .txn(Txn {
                compare: vec![Compare::mod_revision_is(keys::repo(&name), rev)],
                success: vec![
                    Op::delete(keys::repo(&name)),
                    range(keys::manifests(&name)),
                    range(keys::tags(&name)),
                    range(keys::links(&name)),
                ],
                failure: vec![],
            })
            .await?;
        if !r.succeeded {
            return Err(EcrError::Server(
                "the repository changed while it was being deleted; retry".into(),
            ));
        }
        Ok(DeleteRepositoryResponse {
            repository: Some(rec.repo),
        })
    }

    pub async fn put_image_tag_mutability(
        &self,
        req: PutImageTagMutabilityRequest,
    ) -> Result<PutImageTagMutabilityResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let m = req.image_tag_mutability.clone().unwrap_or_default();
        if m != "MUTABLE" && m != "IMMUTABLE" {
            return Err(EcrError::InvalidParameter(format!(
                "imageTagMutability {m} is not supported; use MUTABLE or IMMUTABLE."
            )));
        }
        let rec = self
            .modify_repo(req.repository_name.as_deref(), |r| {
                r.repo.image_tag_mutability = Some(m.clone());
                Ok(())
            })
            .await?;
        Ok(PutImageTagMutabilityResponse {
            registry_id: rec.repo.registry_id.clone(),
            repository_name: rec.repo.repository_name.clone(),
            image_tag_mutability: Some(m),
            image_tag_mutability_exclusion_filters: None,
        })
    }

    /// Images of a repository: (manifest, its tags), newest push first.
    pub(crate) async fn images(
        &self,
        repo: &str,
    ) -> Result<Vec<(ManifestRecord, Vec<String>)>, EcrError> {
        let tags = self.tags_of(repo).await.map_err(map_dist)?;
        let mut out: Vec<(ManifestRecord, Vec<String>)> = self
            .manifests_of(repo)
            .await
            .map_err(map_dist)?
            .into_iter()
            .map(|m| {
                let t = tags
                    .iter()
                    .filter(|(_, r)| r.digest == m.digest)
                    .map(|(t, _)| t.clone())
                    .collect();
                (m, t)
            })
            .collect();
        out.sort_by(|a, b| {
            b.0.pushed_at
                .partial_cmp(&a.0.pushed_at)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.digest.cmp(&b.0.digest))
        });
        Ok(out)
    }

    fn detail(&self, repo: &str, m: &ManifestRecord, tags: &[String]) -> ImageDetail {
        ImageDetail {
            registry_id: Some(self.cfg.account_id.clone()),
            repository_name: Some(repo.to_string()),
            image_digest: Some(m.digest.clone()),
            image_tags: (!tags.is_empty()).then(|| tags.to_vec()),
            image_size_in_bytes: Some(m.image_size),
            image_pushed_at: Some(m.pushed_at),
            image_manifest_media_type: Some(m.media_type.clone()),
            artifact_media_type: m.artifact_type.clone(),
            subject_manifest_digest: m.subject.clone(),
            image_status: Some("ACTIVE".into()),
            ..Default::default()
        }
    }

    pub async fn list_images(
        &self,
        req: ListImagesRequest,
    ) -> Result<ListImagesResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.repo_record(Some(&name)).await?;
        let status = req.filter.as_ref().and_then(|f| f.tag_status.clone());
        let mut ids = Vec::new();
        for (m, tags) in self.images(&name).await? {
            if tags.is_empty() {
                if status.as_deref() != Some("TAGGED") {
                    ids.push(ImageIdentifier {
                        image_digest: Some(m.digest.clone()),
                        image_tag: None,
                    });
                }
            } else if status.as_deref() != Some("UNTAGGED") {
                for t in tags {
                    ids.push(ImageIdentifier {
                        image_digest: Some(m.digest.clone()),
                        image_tag: Some(t),
                    });
                }
            }
        }
        let (page, next) = paginate(ids, req.next_token.as_deref(), req.max_results, 100, 1000)?;
        Ok(ListImagesResponse {
            image_ids: Some(page),
            next_token: next,
        })
    }

    pub async fn describe_images(
        &self,
        req: DescribeImagesRequest,
    ) -> Result<DescribeImagesResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.repo_record(Some(&name)).await?;
        let images = self.images(&name).await?;
        let status = req.filter.as_ref().and_then(|f| f.tag_status.clone());
        let mut details = Vec::new();
        if let Some(ids) = &req.image_ids {
            for id in ids {
                let hit = images.iter().find(|(m, tags)| matches_id(id, m, tags));
                match hit {
                    Some((m, tags)) => details.push(self.detail(&name, m, tags)),
                    None => {
                        return Err(EcrError::ImageNotFound(format!(
                            "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{}'",
                            describe_id(id),
                            self.cfg.account_id
                        )));
                    }
                }
            }
            return Ok(DescribeImagesResponse {
                image_details: Some(details),
                next_token: None,
            });
        }
        for (m, tags) in &images {
            let keep = match status.as_deref() {
                Some("TAGGED") => !tags.is_empty(),
                Some("UNTAGGED") => tags.is_empty(),
                _ => true,
            };
            if keep {
                details.push(self.detail(&name, m, tags));
            }
        }
        let (page, next) = paginate(
            details,
            req.next_token.as_deref(),
            req.max_results,
            100,
            1000,
        )?;
        Ok(DescribeImagesResponse {
            image_details: Some(page),
            next_token: next,
        })
    }

    pub async fn batch_get_image(
        &self,
        req: BatchGetImageRequest,
    ) -> Result<BatchGetImageResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.repo_record(Some(&name)).await?;
        let images = self.images(&name).await?;
        let accepted = req.accepted_media_types.clone().unwrap_or_default();
        let mut out = Vec::new();
        let mut failures = Vec::new();
        for id in req.image_ids.as_deref().unwrap_or_default() {
            match images.iter().find(|(m, tags)| matches_id(id, m, tags)) {
                Some((m, _)) if accepted.is_empty() || accepted.contains(&m.media_type) => out
                    .push(Image {
                        registry_id: Some(self.cfg.account_id.clone()),
                        repository_name: Some(name.clone()),
                        image_id: Some(ImageIdentifier {
                            image_digest: Some(m.digest.clone()),
                            image_tag: id.image_tag.clone(),
                        }),
                        image_manifest: Some(m.body.clone()),
                        image_manifest_media_type: Some(m.media_type.clone()),
                    }),
                Some(_) => failures.push(failure(
                    id,
                    "UnsupportedImageType",
                    "The image's media type is not one of acceptedMediaTypes.",
                )),
                None => failures.push(failure(id, "ImageNotFound", "Requested image not found")),
            }
        }
        Ok(BatchGetImageResponse {
            images: Some(out),
            failures: Some(failures),
        })
    }

    pub async fn batch_delete_image(
        &self,
        req: BatchDeleteImageRequest,
    ) -> Result<BatchDeleteImageResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.repo_record(Some(&name)).await?;
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for id in req.image_ids.as_deref().unwrap_or_default() {
            let images = self.images(&name).await?;
            let Some((m, tags)) = images.iter().find(|(m, tags)| matches_id(id, m, tags)) else {
                failures.push(failure(id, "ImageNotFound", "Requested image not found"));
                continue;
            };
            // By tag: remove just that tag (the image stays if other tags or none remain,
            // as ECR does); by digest: the image and all its tags.
            let r = match (&id.image_tag, &id.image_digest) {
                (Some(t), _) => self.delete_manifest(&name, t).await,
                (None, Some(_)) => self.delete_manifest(&name, &m.digest).await,
                _ => Ok(()),
            };
            match r {
                Ok(()) => deleted.push(ImageIdentifier {
                    image_digest: Some(m.digest.clone()),
                    image_tag: id.image_tag.clone().or_else(|| tags.first().cloned()),
                }),
                Err(e) => failures.push(failure(id, "ImageNotFound", &e.message)),
            }
        }
        Ok(BatchDeleteImageResponse {
            image_ids: Some(deleted),
            failures: Some(failures),
        })
    }

    pub async fn put_image(&self, req: PutImageRequest) -> Result<PutImageResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        let (rec, _) = self.repo_record(Some(&name)).await?;
        let body = req.image_manifest.clone().unwrap_or_default();
        let d = Digest::of(body.as_bytes());
        if let Some(given) = &req.image_digest
            && given != d.as_str()
        {
            return Err(EcrError::InvalidParameter(format!(
                "imageDigest {given} does not match the manifest's digest {d}"
            )));
        }
        let reference = req.image_tag.clone().unwrap_or_else(|| d.to_string());
        // ECR refuses an identical re-put explicitly.
        if let Some(t) = &req.image_tag
            && let Some((cur, _)) = self
                .get_json::<crate::TagRecord>(&keys::tag(&name, t))
                .await?
        {
            if cur.digest == d.as_str() {
                return Err(EcrError::ImageAlreadyExists(format!(
                    "Image with digest '{d}' and tag '{t}' already exists in the repository with name '{name}' in registry with id '{}'",
                    self.cfg.account_id
                )));
            }
            if rec.repo.image_tag_mutability.as_deref() == Some("IMMUTABLE") {
                return Err(EcrError::ImageTagAlreadyExists(format!(
                    "The image tag '{t}' already exists in the '{name}' repository and cannot be overwritten because the repository is immutable."
                )));
            }
        }
        let d = self
            .put_manifest(
                &name,
                &reference,
                req.image_manifest_media_type.as_deref(),
                body.as_bytes(),
            )
            .await
            .map_err(map_dist)?;
        let m = self.manifest(&name, d.as_str()).await.map_err(map_dist)?;
        Ok(PutImageResponse {
            image: Some(Image {
                registry_id: Some(self.cfg.account_id.clone()),
                repository_name: Some(name),
                image_id: Some(ImageIdentifier {
                    image_digest: Some(d.to_string()),
                    image_tag: req.image_tag.clone(),
                }),
                image_manifest: Some(m.body),
                image_manifest_media_type: Some(m.media_type),
            }),
        })
    }

    /// GetAuthorizationToken for the caller's access key.
    pub async fn get_authorization_token(
        &self,
        req: GetAuthorizationTokenRequest,
        access_key_id: &str,
    ) -> Result<GetAuthorizationTokenResponse, EcrError> {
        for id in req.registry_ids.as_deref().unwrap_or_default() {
            self.check_registry_id(Some(id))?;
        }
        let expires = self.now().as_secs() + token::TOKEN_TTL_SECS;
        let t = token::issue(&self.token_key, access_key_id, expires);
        Ok(GetAuthorizationTokenResponse {
            authorization_data: Some(vec![AuthorizationData {
                authorization_token: Some(token::authorization_token(&t)),
                expires_at: Some(expires as f64),
                proxy_endpoint: Some(self.cfg.base_url()),
            }]),
        })
    }

    /// The access key a registry token was issued to, if valid now.
    pub fn verify_token(&self, t: &str) -> Option<String> {
        token::verify(&self.token_key, t, self.now().as_secs())
    }

    /// A registry password (the `AWS` user's, as `docker login` takes it) for an access key,
    /// valid for `ttl_secs`: what berth's own node agent pulls with.
    pub fn node_password(&self, access_key_id: &str, ttl_secs: i64) -> String {
        token::issue(
            &self.token_key,
            access_key_id,
            self.now().as_secs() + ttl_secs,
        )
    }

    pub async fn batch_check_layer_availability(
        &self,
        req: BatchCheckLayerAvailabilityRequest,
    ) -> Result<BatchCheckLayerAvailabilityResponse, EcrError> {
        self.check_registry_id(req.registry_id.as_deref())?;
        let name = req.repository_name.clone().unwrap_or_default();
        self.repo_record(Some(&name)).await?;
        let mut layers = Vec::new();
        let mut failures = Vec::new();
        for d in req.layer_digests.as_deref().unwrap_or_default() {
            let Ok(dg) = Digest::parse(d) else {
                failures.push(LayerFailure {
                    layer_digest: Some(d.clone()),
                    failure_code: Some("InvalidLayerDigest".into()),
                    failure_reason: Some("Invalid layer digest".into()),
                });
                continue;
            };
            match self.blob(&name, &dg).await {
                Ok(size) => layers.push(Layer {
                    layer_digest: Some(d.clone()),
                    layer_availability: Some("AVAILABLE".into()),
                    layer_size: Some(size as i64),
                    media_type: None,
                }),
                Err(_) => failures.push(LayerFailure {
                    layer_digest: Some(d.clone()),
                    failure_code: Some("MissingLayerDigest".into()),
                    failure_reason: Some("Requested layer not found".into()),
                }),
            }
        }
        Ok(BatchCheckLayerAvailabilityResponse {
            layers: Some(layers),
            failures: Some(failures),
        })
    }

    fn repo_from_arn<'a>(&self, arn: &'a str) -> Result<&'a str, EcrError> {
        let prefix = format!(
            "arn:aws:ecr:{}:{}:repository/",
            self.cfg.region, self.cfg.account_id
        );
        arn.strip_prefix(prefix.as_str())
            .ok_or_else(|| EcrError::InvalidParameter(format!("Invalid resource ARN: {arn}")))
    }

    pub async fn tag_resource(
        &self,
        req: TagResourceRequest,
    ) -> Result<TagResourceResponse, EcrError> {
        let name = self.repo_from_arn(req.resource_arn.as_deref().unwrap_or_default())?;
        let new = req.tags.clone().unwrap_or_default();
        check_tags(&new)?;
        self.modify_repo(Some(name), |r| {
            for t in &new {
                match r.tags.iter_mut().find(|x| x.key == t.key) {
                    Some(x) => x.value = t.value.clone(),
                    None => r.tags.push(t.clone()),
                }
            }
            check_tags(&r.tags)
        })
        .await?;
        Ok(TagResourceResponse::default())
    }

    pub async fn untag_resource(
        &self,
        req: UntagResourceRequest,
    ) -> Result<UntagResourceResponse, EcrError> {
        let name = self.repo_from_arn(req.resource_arn.as_deref().unwrap_or_default())?;
        let keys_ = req.tag_keys.clone().unwrap_or_default();
        self.modify_repo(Some(name), |r| {
            r.tags
                .retain(|t| !keys_.iter().any(|k| Some(k) == t.key.as_ref()));
            Ok(())
        })
        .await?;
        Ok(UntagResourceResponse::default())
    }

    pub async fn list_tags_for_resource(
        &self,
        req: ListTagsForResourceRequest,
    ) -> Result<ListTagsForResourceResponse, EcrError> {
        let name = self.repo_from_arn(req.resource_arn.as_deref().unwrap_or_default())?;
        let (rec, _) = self.repo_record(Some(name)).await?;
        Ok(ListTagsForResourceResponse {
            tags: Some(rec.tags),
        })
    }
}

fn matches_id(id: &ImageIdentifier, m: &ManifestRecord, tags: &[String]) -> bool {
    let d_ok = id.image_digest.as_ref().is_none_or(|d| d == &m.digest);
    let t_ok = id.image_tag.as_ref().is_none_or(|t| tags.contains(t));
    (id.image_digest.is_some() || id.image_tag.is_some()) && d_ok && t_ok
}

fn describe_id(id: &ImageIdentifier) -> String {
    format!(
        "'{{imageDigest:'{}', imageTag:'{}'}}'",
        id.image_digest.as_deref().unwrap_or("null"),
        id.image_tag.as_deref().unwrap_or("null")
    )
}

fn failure(id: &ImageIdentifier, code: &str, reason: &str) -> ImageFailure {
    ImageFailure {
        image_id: Some(id.clone()),
        failure_code: Some(code.to_string()),
        failure_reason: Some(reason.to_string()),
    }
}

fn max_results(v: Option<i32>, default: usize, max: usize) -> Result<usize, EcrError> {
    match v {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(EcrError::InvalidParameter(format!(
            "maxResults must be between 1 and {max}, got {n}"
        ))),
    }
}

fn encode_token(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode_token(s: &str) -> Result<String, EcrError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| EcrError::InvalidParameter("Invalid nextToken".into()))
}

/// Position-based pages over a list whose order is stable between calls.
pub(crate) fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<i32>,
    default: usize,
    limit_max: usize,
) -> Result<(Vec<T>, Option<String>), EcrError> {
    let limit = max_results(max, default, limit_max)?;
    let start: usize = match token {
        Some(t) => decode_token(t)?
            .parse()
            .map_err(|_| EcrError::InvalidParameter("Invalid nextToken".into()))?,
        None => 0,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next =
        (start + page.len() < total).then(|| encode_token(&(start + page.len()).to_string()));
    Ok((page, next))
}
