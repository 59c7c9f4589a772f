//! What the node agent knows of one Pod's containers, and the `status` it writes for
//! it through the `pods/status` subresource, as a pure function of that knowledge.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The present time as the API's `Time`.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Which part of the Pod a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An init container that runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`: started in order with the init
    /// containers, then kept running beside the app containers.
    Sidecar,
    /// One of `spec.containers`.
    App,
}

/// A container's state, as `containerStatuses[].state` says it.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Time,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        since: Time,
        until: Time,
    },
}

impl Run {
    pub fn waiting(reason: &str) -> Self {
        Run::Waiting {
            reason: reason.to_string(),
            message: None,
        }
    }

    fn to_api(&self) -> ContainerState {
        match self {
            Run::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            Run::Running { since } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(since.clone()),
                }),
                ..ContainerState::default()
            },
            Run::Terminated {
                exit_code,
                reason,
                since,
                until,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: Some(reason.clone()),
                    started_at: Some(since.clone()),
                    finished_at: Some(until.clone()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// One container as the agent runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    pub name: String,
    pub image: String,
    pub kind: Kind,
    pub run: Run,
    pub last: Option<Run>,
    pub restarts: i32,
    /// Exited and will not be started again.
    pub done: bool,
    /// The startup probe passed (or there is none and the process runs).
    pub started: bool,
    /// Running, started, and the readiness probe passes (or there is none).
    pub ready: bool,
}

impl ContainerRun {
    pub fn new(name: &str, image: &str, kind: Kind) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            kind,
            run: Run::waiting("PodInitializing"),
            last: None,
            restarts: 0,
            done: false,
            started: false,
            ready: false,
        }
    }

    pub fn exited_with(&self) -> Option<i32> {
        match self.run {
            Run::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restarts,
            state: Some(self.run.to_api()),
            last_state: self.last.as_ref().map(Run::to_api),
            ..ContainerStatus::default()
        }
    }
}

/// Everything the agent reports of one Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRun {
    /// Why the Pod failed, when an init container did.
    pub failed: Option<String>,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Option<Ipv4Addr>,
    pub start_time: Time,
    /// Every init container completed (and every sidecar started).
    pub initialized: bool,
    pub containers: Vec<ContainerRun>,
    /// A test marked the Pod not ready ([`super::NodeAgent::set_ready`]).
    pub forced_not_ready: bool,
}

impl PodRun {
    pub fn container_mut(&mut self, name: &str) -> Option<&mut ContainerRun> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerRun> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// `Pending` until initialized, `Running`, then `Succeeded` or `Failed` once
    /// every app container exited for good.
    pub fn phase(&self) -> &'static str {
        if self.failed.is_some() {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        let mut apps = self
            .containers
            .iter()
            .filter(|c| c.kind == Kind::App)
            .peekable();
        if apps.peek().is_none() || !apps.clone().all(|c| c.done) {
            return "Running";
        }
        if apps.all(|c| c.exited_with() == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    }

    /// Every app container and sidecar is ready, as the kubelet counts it.
    pub fn containers_ready(&self) -> bool {
        let mut running = self
            .containers
            .iter()
            .filter(|c| c.kind != Kind::Init)
            .peekable();
        running.peek().is_some() && running.all(|c| c.ready)
    }

    /// The status to write: phase, IPs, conditions and container statuses. The
    /// condition times are left out: they would change the status at every write.
    pub fn to_api(&self) -> PodStatus {
        let ready = self.containers_ready();
        let condition = |kind: &str, status: bool, reason: Option<&str>| PodCondition {
            type_: kind.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.map(str::to_string),
            ..PodCondition::default()
        };
        let statuses = |kind: &dyn Fn(Kind) -> bool| {
            let list: Vec<ContainerStatus> = self
                .containers
                .iter()
                .filter(|c| kind(c.kind))
                .map(ContainerRun::to_api)
                .collect();
            (!list.is_empty()).then_some(list)
        };
        let not_ready_reason = match (self.forced_not_ready, ready) {
            (true, _) => Some("MarkedNotReady"),
            (false, false) => Some("ContainersNotReady"),
            (false, true) => None,
        };
        PodStatus {
            phase: Some(self.phase().to_string()),
            message: self.failed.clone(),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            pod_ips: self.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            host_ip: self.host_ip.map(|ip| ip.to_string()),
            host_ips: self.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(vec![
                condition("PodReadyToStartContainers", self.pod_ip.is_some(), None),
                condition(
                    "Initialized",
                    self.initialized,
                    (!self.initialized).then_some("ContainersNotInitialized"),
                ),
                condition(
                    "ContainersReady",
                    ready,
                    (!ready).then_some("ContainersNotReady"),
                ),
                condition("Ready", ready && !self.forced_not_ready, not_ready_reason),
            ]),
            init_container_statuses: statuses(&|k| k != Kind::App),
            container_statuses: statuses(&|k| k == Kind::App),
            ..PodStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Vec<ContainerRun>) -> PodRun {
        PodRun {
            failed: None,
            pod_ip: Some(Ipv4Addr::new(10, 1, 2, 3)),
            host_ip: Some(Ipv4Addr::new(10, 1, 2, 1)),
            start_time: now(),
            initialized: true,
            containers,
            forced_not_ready: false,
        }
    }

    fn ready(name: &str, kind: Kind, is_ready: bool) -> ContainerRun {
        ContainerRun {
            run: Run::Running { since: now() },
            started: true,
            ready: is_ready,
            ..ContainerRun::new(name, "img", kind)
        }
    }

    fn condition(status: &PodStatus, kind: &str) -> String {
        let conditions = status.conditions.as_deref().unwrap_or_default();
        match conditions.iter().find(|c| c.type_ == kind) {
            Some(c) => c.status.clone(),
            None => panic!("no {kind} condition in {conditions:?}"),
        }
    }

    #[test]
    fn ready_needs_every_app_container_and_sidecar_but_not_init_containers() {
        let done_init = ContainerRun {
            run: Run::Terminated {
                exit_code: 0,
                reason: "Completed".to_string(),
                since: now(),
                until: now(),
            },
            ..ContainerRun::new("init", "img", Kind::Init)
        };
        let cases = [
            (
                vec![done_init.clone(), ready("app", Kind::App, true)],
                "True",
            ),
            (
                vec![
                    ready("proxy", Kind::Sidecar, false),
                    ready("app", Kind::App, true),
                ],
                "False",
            ),
            (
                vec![
                    ready("proxy", Kind::Sidecar, true),
                    ready("app", Kind::App, false),
                ],
                "False",
            ),
            (vec![done_init], "False"),
        ];
        for (containers, want) in cases {
            let names: Vec<_> = containers.iter().map(|c| c.name.clone()).collect();
            let status = pod(containers).to_api();
            assert_eq!(condition(&status, "Ready"), want, "{names:?}");
            assert_eq!(condition(&status, "ContainersReady"), want, "{names:?}");
        }
    }

    #[test]
    fn a_pod_marked_not_ready_keeps_its_containers_ready() {
        let mut run = pod(vec![ready("app", Kind::App, true)]);
        run.forced_not_ready = true;
        let status = run.to_api();
        assert_eq!(condition(&status, "Ready"), "False");
        assert_eq!(condition(&status, "ContainersReady"), "True");
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn sidecars_are_reported_with_the_init_containers() {
        let status = pod(vec![
            ready("proxy", Kind::Sidecar, true),
            ready("app", Kind::App, true),
        ])
        .to_api();
        let names = |list: &Option<Vec<ContainerStatus>>| -> Vec<String> {
            list.iter().flatten().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(&status.init_container_statuses), ["proxy"]);
        assert_eq!(names(&status.container_statuses), ["app"]);
    }
}
