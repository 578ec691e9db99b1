//! `cri-latency ENDPOINT IMAGE N`: the latency of ExecSync and of a streamed
//! exec (`echo`, over SPDY/3.1 to the URL Exec returns) against a CRI
//! endpoint, in a host-network pod; prints JSON with the milliseconds of
//! each of N rounds. bench/cri-stream.sh runs it against molde and
//! containerd in the same run.

use std::time::Instant;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use molde_tests::spdy;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, image, n] = args.as_slice() else {
        eprintln!("usage: cri-latency ENDPOINT IMAGE N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(molde_api::client::connect(&molde_api::client::Address::Unix(
            endpoint.trim_start_matches("unix://").into(),
        )))
        .expect("connecting to the CRI endpoint");
    let mut runtime = RuntimeServiceClient::new(ch.clone());
    let mut images = ImageServiceClient::new(ch);
    rt.block_on(images.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .expect("PullImage");
    let uid = format!("latency-{}", std::process::id());
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: uid.clone(),
            uid: uid.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .block_on(runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        }))
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .block_on(runtime.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        }))
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.block_on(runtime.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    }))
    .expect("StartContainer");

    let mut exec_sync = || {
        let t = Instant::now();
        let r = rt
            .block_on(runtime.exec_sync(cri::ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["echo".into(), "hi".into()],
                timeout: 10,
            }))
            .expect("ExecSync")
            .into_inner();
        assert_eq!(r.stdout, b"hi\n");
        t.elapsed().as_secs_f64() * 1e3
    };
    let sync: Vec<f64> = (0..n + 3).map(|_| exec_sync()).skip(3).collect();
    let mut runtime2 = runtime.clone();
    let mut streamed = || {
        let t = Instant::now();
        let url = rt
            .block_on(runtime2.exec(cri::ExecRequest {
                container_id: container.clone(),
                cmd: vec!["echo".into(), "hi".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            }))
            .expect("Exec")
            .into_inner()
            .url;
        let mut c = spdy::Client::connect(&url, &["v4.channel.k8s.io"]).expect("SPDY upgrade");
        let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
        let o = spdy::collect(&mut c, &ids);
        assert_eq!(o.stdout, b"hi\n");
        t.elapsed().as_secs_f64() * 1e3
    };
    let stream: Vec<f64> = (0..n + 3).map(|_| streamed()).skip(3).collect();
    let _ = rt.block_on(runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }));
    let _ = rt.block_on(runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }));
    println!(
        "{}",
        serde_json::json!({"exec_sync_ms": sync, "exec_stream_ms": stream})
    );
}
