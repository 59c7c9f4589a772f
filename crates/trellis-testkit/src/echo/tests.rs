use super::*;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_conformance_manifests_arguments_give_the_http_and_grpc_ports() {
    // As the mesh conformance Deployments start their echo image.
    let args = strings(&[
        "--tcp=9090",
        "--port=8080",
        "--grpc=7070",
        "--port=8443",
        "--tls=8443",
        "--crt=/cert.crt",
        "--key=/cert.key",
    ]);
    let options = EchoOptions::from_args("echo-v1-abc", &args).expect("options");
    assert_eq!(
        options.http,
        vec![8080],
        "the TLS port is not served as HTTP"
    );
    assert_eq!(options.grpc, vec![7070]);
    assert_eq!(options.name, "echo-v1-abc");

    let err = EchoOptions::from_args("x", &strings(&["--port"])).expect_err("no value");
    assert!(err.contains("--flag=value"), "{err}");
    let err = EchoOptions::from_args("x", &strings(&["--port=http"])).expect_err("port");
    assert!(err.contains("wants a port"), "{err}");
    let err = EchoOptions::from_args("x", &strings(&["--udp=1"])).expect_err("unknown");
    assert!(err.contains("unknown flag --udp"), "{err}");
}

#[test]
fn a_call_survives_its_command_line() {
    let call = EchoCall {
        url: "http://10.96.0.10:80/set?x=1".into(),
        method: "POST".into(),
        headers: vec![("Host".into(), "echo".into()), ("X-A".into(), "a:b".into())],
        count: 3,
        grpc: false,
    };
    assert_eq!(EchoCall::from_args(&call.to_args()), Ok(call));
    let err = EchoCall::from_args(&strings(&["http://x/", "-H", "nocolon"])).expect_err("bad");
    assert!(err.contains("bad header"), "{err}");
    let err = EchoCall::from_args(&strings(&["http://x/", "--verbose"])).expect_err("bad");
    assert!(err.contains("unknown argument"), "{err}");
}

#[tokio::test]
async fn the_client_prints_what_the_server_received_and_who_answered() {
    let options = EchoOptions {
        name: "echo-v2-xyz".into(),
        http: vec![0],
        grpc: vec![0],
    };
    let server = EchoServer::start(&options).await.expect("server");
    let port = server.http_addrs()[0].port();
    let mut call = EchoCall::get(format!("http://127.0.0.1:{port}/v2/example?animal=whale"));
    call.headers = vec![
        ("Host".into(), "echo".into()),
        ("X-Header-Add".into(), "one".into()),
        ("x-header-add".into(), "two".into()),
    ];
    call.count = 2;
    let answers = parse_answers(&call.run().await);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let answer = &answers[0];
    assert_eq!(answer.status, Some(200));
    assert_eq!(answer.hostname, "echo-v2-xyz");
    assert_eq!(answer.method, "GET");
    assert_eq!(answer.url, "/v2/example?animal=whale");
    assert_eq!(answer.host, "echo");
    assert_eq!(
        answer.request_header("x-header-add").as_deref(),
        Some("one,two")
    );
    assert_eq!(answer.request_header("X-Absent"), None);
    assert!(
        answer.response_header("content-length").is_some(),
        "{answer:?}"
    );

    let grpc = server.grpc_addrs()[0].port();
    let mut call = EchoCall::get(format!("http://127.0.0.1:{grpc}"));
    call.grpc = true;
    let answers = parse_answers(&call.run().await);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, Some(200));
    assert_eq!(answers[0].hostname, "echo-v2-xyz");

    // Nothing listens: an error, not a status.
    drop(server);
    let answers = parse_answers(
        &EchoCall::get(format!("http://127.0.0.1:{port}/"))
            .run()
            .await,
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, None);
    assert!(answers[0].error.is_some(), "{answers:?}");
}
