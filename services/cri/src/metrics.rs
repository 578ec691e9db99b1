//! CRI's `ListMetricDescriptors` and `ListPodSandboxMetrics`: the numbers
//! the kubelet would otherwise scrape from cAdvisor, under cAdvisor's names
//! and labels, from the same cgroup and namespace readings as the stats.
//! CRI metric values are whole numbers: seconds are whole seconds.

use k8s_cri::v1 as cri;
use molde_api::molde::services::runtime::v1 as rt;

/// cAdvisor's labels of a container's metrics, in this order.
pub const CONTAINER_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// A container's series: (name, help, counter?).
const CONTAINER_SERIES: [(&str, &str, bool); 9] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        true,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        false,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        false,
    ),
    ("container_memory_rss", "Size of RSS in bytes.", false),
    ("container_memory_swap", "Container swap usage in bytes.", false),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        false,
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures (page faults).",
        true,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        false,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        false,
    ),
];

/// A pod's network series, labelled with the interface too.
const NETWORK_SERIES: [(&str, &str); 4] = [
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
    ),
];

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    let labels = |extra: Option<&str>| {
        CONTAINER_LABELS
            .iter()
            .map(|l| l.to_string())
            .chain(extra.map(str::to_string))
            .collect::<Vec<_>>()
    };
    CONTAINER_SERIES
        .iter()
        .map(|(name, help, _)| cri::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: labels(None),
        })
        .chain(NETWORK_SERIES.iter().map(|(name, help)| cri::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: labels(Some("interface")),
        }))
        .collect()
}

fn metric(name: &str, counter: bool, now: i64, labels: &[String], value: u64) -> cri::Metric {
    cri::Metric {
        name: name.to_string(),
        timestamp: now,
        metric_type: if counter {
            cri::MetricType::Counter
        } else {
            cri::MetricType::Gauge
        } as i32,
        label_values: labels.to_vec(),
        value: Some(cri::UInt64Value { value }),
    }
}

/// The label values of a container of a pod, in `CONTAINER_LABELS`' order.
pub fn container_labels(pod: &cri::PodSandboxConfig, c: &crate::store::ContainerRecord) -> Vec<String> {
    let meta = pod.metadata.clone().unwrap_or_default();
    vec![
        c.config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        c.id.clone(),
        c.config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        c.id.clone(),
        meta.namespace,
        meta.name,
    ]
}

/// A container's series from its runtime stats, writable layer and process count.
pub fn container(
    labels: &[String],
    usage: &rt::StatsResponse,
    layer_bytes: u64,
    now: i64,
) -> Vec<cri::Metric> {
    let values = [
        usage.cpu_usage_ns / 1_000_000_000,
        usage.memory_bytes,
        usage.memory_working_set_bytes,
        usage.memory_rss_bytes,
        usage.swap_bytes,
        usage.memory_limit_bytes,
        usage.memory_page_faults,
        layer_bytes,
        usage.pids,
    ];
    CONTAINER_SERIES
        .iter()
        .zip(values)
        .map(|((name, _, counter), v)| metric(name, *counter, now, labels, v))
        .collect()
}

/// A pod's network series, one per interface (the pod's labels, no container).
pub fn network(
    pod_labels: &[String],
    interfaces: &[cri::NetworkInterfaceUsage],
    now: i64,
) -> Vec<cri::Metric> {
    let v = |x: &Option<cri::UInt64Value>| x.as_ref().map_or(0, |v| v.value);
    interfaces
        .iter()
        .flat_map(|i| {
            let mut labels = pod_labels.to_vec();
            labels.push(i.name.clone());
            let values = [v(&i.rx_bytes), v(&i.tx_bytes), v(&i.rx_errors), v(&i.tx_errors)];
            NETWORK_SERIES
                .iter()
                .zip(values)
                .map(|((name, _), value)| metric(name, true, now, &labels, value))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_a_descriptor_with_its_labels() {
        let d = descriptors();
        let usage = rt::StatsResponse {
            cpu_usage_ns: 2_500_000_000,
            pids: 3,
            ..Default::default()
        };
        let labels: Vec<String> = CONTAINER_LABELS.iter().map(|l| format!("v-{l}")).collect();
        for m in container(&labels, &usage, 4096, 1) {
            let desc = d.iter().find(|x| x.name == m.name).expect("described");
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let cpu = container(&labels, &usage, 0, 1);
        assert_eq!(cpu[0].value.as_ref().unwrap().value, 2, "whole seconds");
        assert_eq!(
            cpu.iter()
                .find(|m| m.name == "container_processes")
                .unwrap()
                .value
                .as_ref()
                .unwrap()
                .value,
            3
        );
        let eth0 = cri::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: Some(cri::UInt64Value { value: 10 }),
            ..Default::default()
        };
        for m in network(&labels, &[eth0], 1) {
            let desc = d.iter().find(|x| x.name == m.name).expect("described");
            assert_eq!(desc.label_keys.last().map(String::as_str), Some("interface"));
            assert_eq!(m.label_values.last().map(String::as_str), Some("eth0"));
        }
    }
}
