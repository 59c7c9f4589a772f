//! Workload identity on Kubernetes: a proxy proves its Pod with the projected
//! ServiceAccount token the injector mounts (audience [`AUDIENCE`]), and the control
//! plane asks the API server about it (TokenReview) before issuing the certificate of
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! The token must be authenticated for the audience, name the workload's own
//! ServiceAccount, and be bound to the Pod the proxy says it is. The API server
//! refuses a bound token once its Pod is deleted, so a token outliving its Pod is
//! worthless.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use trellis_api::proto::v1::Workload;
use trellis_control::platform::Platform;

/// The audience of the tokens proxies present.
pub const AUDIENCE: &str = "trellis";
/// The extra field of a bound token's review that names its Pod.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Checks proxies' ServiceAccount tokens with the TokenReview API.
pub struct KubernetesPlatform {
    client: Client,
}

impl KubernetesPlatform {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl Platform for KubernetesPlatform {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn authenticate(&self, credential: &str, workload: &Workload) -> Result<(), String> {
        if credential.is_empty() {
            return Err(
                "no token: a proxy on Kubernetes presents its projected ServiceAccount token"
                    .into(),
            );
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: credential.to_string(),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("cannot review the token with the API server: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(format!("the API server refused the token: {why}"));
        }
        if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
            return Err(format!("the token is not for the audience {AUDIENCE:?}"));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let expected = format!(
            "system:serviceaccount:{}:{}",
            workload.namespace, workload.service_account
        );
        if username != expected {
            return Err(format!(
                "the token is {username}'s, but this workload runs as {expected}"
            ));
        }
        let pods = user.extra.as_ref().and_then(|e| e.get(POD_NAME));
        if !pods.is_some_and(|p| p.contains(&workload.name)) {
            return Err(format!(
                "the token is not bound to Pod {}/{} (a projected token bound to the Pod is needed)",
                workload.namespace, workload.name
            ));
        }
        Ok(())
    }
}
