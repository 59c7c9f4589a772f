//! Which Pods each Service selects, found through indexes rather than by testing every
//! Pod against every Service: a cluster of a thousand Services and five thousand Pods
//! is translated on every change, and five million selector tests each time made the
//! mirror fall behind the cluster.
//!
//! A selector matches a Pod only if the Pod carries the selector's first label (its
//! smallest key), so Services are indexed by namespace and that label, and Pods by
//! namespace and each of their labels; only the candidates an index yields are tested.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, Service};

/// `(namespace, label key, label value)`.
type LabelKey<'a> = (&'a str, &'a str, &'a str);

/// The Services and Pods of one [`super::translate::ClusterState`], indexed.
pub struct Selection<'a> {
    /// Services with a non-empty selector, by namespace and the selector's first label.
    services: HashMap<LabelKey<'a>, Vec<&'a Service>>,
    /// Pods by namespace and each of their labels.
    pods: HashMap<LabelKey<'a>, Vec<&'a Pod>>,
}

/// A Service's selector, when it has a non-empty one.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// Whether `labels` carry every label of `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

impl<'a> Selection<'a> {
    pub fn new(services: &'a [Service], pods: &'a [Pod]) -> Self {
        let mut by_selector: HashMap<LabelKey<'a>, Vec<&'a Service>> = HashMap::new();
        for service in services {
            let Some((k, v)) = selector(service).and_then(|s| s.iter().next()) else {
                continue;
            };
            let key = (namespace_of(&service.metadata), k.as_str(), v.as_str());
            by_selector.entry(key).or_default().push(service);
        }
        let mut by_label: HashMap<LabelKey<'a>, Vec<&'a Pod>> = HashMap::new();
        for pod in pods {
            let namespace = namespace_of(&pod.metadata);
            for (k, v) in pod.metadata.labels.iter().flatten() {
                by_label
                    .entry((namespace, k.as_str(), v.as_str()))
                    .or_default()
                    .push(pod);
            }
        }
        Self {
            services: by_selector,
            pods: by_label,
        }
    }

    /// The Services of `pod`'s namespace whose selector matches it, each once.
    pub fn services_of<'s>(&'s self, pod: &'s Pod) -> impl Iterator<Item = &'a Service> + 's {
        let namespace = namespace_of(&pod.metadata);
        let labels = pod.metadata.labels.as_ref();
        labels
            .into_iter()
            .flatten()
            .filter_map(move |(k, v)| self.services.get(&(namespace, k.as_str(), v.as_str())))
            .flatten()
            .copied()
            .filter(move |service| selector(service).is_some_and(|s| selects(s, labels)))
    }

    /// The Pods of `service`'s namespace its selector matches.
    pub fn pods_of<'s>(&'s self, service: &'s Service) -> impl Iterator<Item = &'a Pod> + 's {
        let selector = selector(service);
        let candidates = selector.and_then(|s| s.iter().next()).and_then(|(k, v)| {
            self.pods
                .get(&(namespace_of(&service.metadata), k.as_str(), v.as_str()))
        });
        candidates
            .into_iter()
            .flatten()
            .copied()
            .filter(move |pod| selector.is_some_and(|s| selects(s, pod.metadata.labels.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(namespace: &str, name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector}
        }))
        .expect("a Service")
    }

    fn pod(namespace: &str, name: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels}
        }))
        .expect("a Pod")
    }

    fn names<'a, T: kube::ResourceExt + 'a>(items: impl Iterator<Item = &'a T>) -> Vec<String> {
        let mut names: Vec<String> = items.map(|i| i.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_service_selects_the_pods_of_its_namespace_carrying_every_label_of_its_selector() {
        let services = [
            service("shop", "books", json!({"app": "books"})),
            service("shop", "books-v2", json!({"app": "books", "version": "v2"})),
            service("shop", "everyone", json!({})),
            service("other", "books", json!({"app": "books"})),
            service("shop", "by-tier", json!({"tier": "back"})),
        ];
        let pods = [
            pod(
                "shop",
                "books-1",
                json!({"app": "books", "version": "v1", "tier": "back"}),
            ),
            pod("shop", "books-2", json!({"app": "books", "version": "v2"})),
            pod("other", "books-3", json!({"app": "books"})),
            pod("shop", "web-1", json!({"app": "web"})),
        ];
        let selection = Selection::new(&services, &pods);
        let of = |i: usize| names(selection.pods_of(&services[i]));
        assert_eq!(of(0), ["books-1", "books-2"]);
        assert_eq!(of(1), ["books-2"]);
        assert!(of(2).is_empty(), "an empty selector selects nothing here");
        assert_eq!(of(3), ["books-3"]);
        assert_eq!(of(4), ["books-1"]);

        let services_of = |i: usize| names(selection.services_of(&pods[i]));
        assert_eq!(services_of(0), ["books", "by-tier"]);
        assert_eq!(services_of(1), ["books", "books-v2"]);
        assert_eq!(services_of(2), ["books"]);
        assert!(services_of(3).is_empty());
    }
}
