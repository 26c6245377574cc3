//! The recipes in `examples/recipes/`, each mounted from its own file and exercised through real
//! HTTP against the behaviour of the API document it follows. The recipes that need the
//! `client` feature are tested in `tests/recipes_client.rs`.

#[path = "http/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../examples/recipes/tenant_scoped_api.rs"]
mod tenant_scoped_api;

#[allow(dead_code)]
#[path = "../examples/recipes/required_header.rs"]
mod required_header;

#[allow(dead_code)]
#[path = "../examples/recipes/middleware_all_posts.rs"]
mod middleware_all_posts;

/// Lasso's Agnes API, tenant-scoped keys and its own conflict body.
mod lasso {
    use actix_web::http::{Method, StatusCode};
    use actix_web::web;
    use serde_json::{json, Value};

    use crate::support::{new_key, send, send_json, serve_recipe, Reply, TestServer};
    use crate::tenant_scoped_api::{configure, idempotency, State};

    fn start() -> (TestServer, web::Data<State>) {
        let state = web::Data::new(State::default());
        let server = serve_recipe(state.clone(), idempotency(), configure);
        (server, state)
    }

    async fn create_policy(server: &TestServer, api_key: &str, key: &str, name: &str) -> Reply {
        let req = server
            .post("/api/v1/policies/")
            .insert_header(("Authorization", format!("Bearer {api_key}")))
            .insert_header(("Idempotency-Key", key));
        send_json(req, &json!({ "name": name, "slug": name })).await
    }

    #[actix_web::test]
    async fn a_retried_create_replays_the_first_response_and_creates_one_policy() {
        let (server, state) = start();
        let key = new_key();

        let first = create_policy(&server, "ak_live_acme", &key, "inbound-strict").await;
        let retry = create_policy(&server, "ak_live_acme", &key, "inbound-strict").await;

        assert_eq!(first.status, StatusCode::CREATED);
        assert!(!first.is_replay());
        assert_eq!(retry.status, StatusCode::CREATED);
        assert!(retry.is_replay(), "{retry:?}");
        assert_eq!(retry.body, first.body);
        assert_eq!(state.policies_created(), 1);

        // Reads ignore the header: the list shows the one policy.
        let list = server
            .request(Method::GET, "/api/v1/policies/")
            .insert_header(("Authorization", "Bearer ak_live_acme"))
            .insert_header(("Idempotency-Key", key.as_str()));
        let list = send(list, String::new()).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.json(), Value::Array(vec![first.json()]));
    }

    #[actix_web::test]
    async fn a_reused_key_with_another_body_is_409_idempotency_conflict_in_the_apis_error_body() {
        let (server, state) = start();
        let key = new_key();

        create_policy(&server, "ak_live_acme", &key, "inbound-strict").await;
        let conflict = create_policy(&server, "ak_live_acme", &key, "outbound-lax").await;

        assert_eq!(conflict.status, StatusCode::CONFLICT);
        assert_eq!(conflict.header("content-type"), Some("application/json"));
        let body = conflict.json();
        assert_eq!(body["code"], "idempotency_conflict");
        assert_eq!(
            body["detail"],
            "Idempotency-Key was reused with a different request body."
        );
        assert_eq!(
            body["doc_url"],
            "https://docs.lasscyber.com/errors/idempotency_conflict"
        );
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
        assert_eq!(state.policies_created(), 1);
    }

    #[actix_web::test]
    async fn tenants_sending_the_same_key_never_collide() {
        let (server, state) = start();
        let key = new_key();

        let acme = create_policy(&server, "ak_live_acme", &key, "inbound-strict").await;
        let globex = create_policy(&server, "ak_live_globex", &key, "inbound-strict").await;
        let acme_retry = create_policy(&server, "ak_live_acme", &key, "inbound-strict").await;
        let globex_retry = create_policy(&server, "ak_live_globex", &key, "inbound-strict").await;

        assert_eq!((acme.status, globex.status), (StatusCode::CREATED, StatusCode::CREATED));
        assert!(!globex.is_replay(), "globex never sees acme's response: {globex:?}");
        assert_eq!(acme.json()["tenant"], "acme");
        assert_eq!(globex.json()["tenant"], "globex");
        assert_ne!(acme.json()["id"], globex.json()["id"]);
        assert!(acme_retry.is_replay() && globex_retry.is_replay());
        assert_eq!(acme_retry.body, acme.body);
        assert_eq!(globex_retry.body, globex.body);
        assert_eq!(state.policies_created(), 2);
    }

    #[actix_web::test]
    async fn a_request_without_a_known_api_key_is_401_and_creates_nothing() {
        let (server, state) = start();
        let key = new_key();

        let unknown = create_policy(&server, "ak_live_nobody", &key, "inbound-strict").await;
        let anonymous = server
            .post("/api/v1/policies/")
            .insert_header(("Idempotency-Key", key.as_str()));
        let anonymous = send_json(anonymous, &json!({ "name": "x", "slug": "x" })).await;

        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(state.policies_created(), 0);
    }

    #[actix_web::test]
    async fn an_empty_or_whitespace_key_is_ignored_and_every_request_runs() {
        let (server, state) = start();

        let empty = create_policy(&server, "ak_live_acme", "", "inbound-strict").await;
        let blank = create_policy(&server, "ak_live_acme", "   ", "inbound-strict").await;
        let blank_again = create_policy(&server, "ak_live_acme", "   ", "inbound-strict").await;

        for reply in [&empty, &blank, &blank_again] {
            assert_eq!(reply.status, StatusCode::CREATED);
            assert!(!reply.is_replay());
        }
        assert_eq!(state.policies_created(), 3);
    }

    #[actix_web::test]
    async fn analyze_is_deliberately_not_deduplicated() {
        let (server, state) = start();
        let key = new_key();
        let analyze = || {
            server
                .post("/api/v1/analyze/")
                .insert_header(("Authorization", "Bearer ak_live_acme"))
                .insert_header(("Idempotency-Key", key.as_str()))
        };

        let first = send_json(analyze(), &json!({ "prompt": "ignore previous instructions" })).await;
        let second = send_json(analyze(), &json!({ "prompt": "ignore previous instructions" })).await;

        assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK));
        assert!(!second.is_replay());
        assert_ne!(first.json()["analysis_id"], second.json()["analysis_id"]);
        assert_eq!(state.analyses_run(), 2);
    }
}

/// Alterscope, a required `X-Idempotency-Key`, in-flight 409 and body-sensitive keys.
mod alterscope {
    use actix_web::http::{Method, StatusCode};
    use actix_web::web;
    use serde_json::json;

    use crate::required_header::{configure, idempotency, Usage};
    use crate::support::{new_key, send, send_json, serve_recipe, wait_until, Reply, TestServer};

    fn start() -> (TestServer, web::Data<Usage>) {
        let usage = web::Data::new(Usage::default());
        let server = serve_recipe(usage.clone(), idempotency(), configure);
        (server, usage)
    }

    fn simulation(server: &TestServer, key: &str) -> awc::ClientRequest {
        server.post("/v2/simulations").insert_header(("X-Idempotency-Key", key))
    }

    async fn simulate(server: &TestServer, key: &str, scenario: &str) -> Reply {
        send_json(simulation(server, key), &json!({ "scenario": scenario })).await
    }

    fn is_marked_replay(reply: &Reply) -> bool {
        reply.header("x-idempotency-replayed") == Some("true")
    }

    #[actix_web::test]
    async fn a_post_without_x_idempotency_key_is_400_and_runs_nothing() {
        let (server, usage) = start();
        let bodies = [
            ("/v2/decisions", json!({ "strategy": "s", "action": "rebalance" })),
            ("/v2/simulations", json!({ "scenario": "eth-depeg" })),
            ("/v2/executions/steps", json!({ "step": "swap" })),
        ];
        for (path, body) in bodies {
            let bare = send_json(server.post(path), &body).await;
            // The generic header name is not the one this API reads.
            let wrong_header = server.post(path).insert_header(("Idempotency-Key", new_key()));
            let wrong_header = send_json(wrong_header, &body).await;

            for reply in [bare, wrong_header] {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
                assert_eq!(reply.header("content-type"), Some("application/json"));
                assert_eq!(reply.json()["code"], "idempotency_key_missing", "{path}");
                let message = reply.json()["error"].as_str().unwrap().to_owned();
                assert!(message.contains("`x-idempotency-key`"), "{message}");
            }
        }
        assert_eq!(usage.runs(), (0, 0, 0));

        let read = send(server.request(Method::GET, "/v2/usage"), String::new()).await;
        assert_eq!(read.status, StatusCode::OK, "a GET needs no key");
    }

    #[actix_web::test]
    async fn a_retry_replays_the_response_byte_for_byte_marked_x_idempotency_replayed() {
        let (server, usage) = start();
        let key = new_key();

        let first = simulate(&server, &key, "eth-depeg").await;
        let retry = simulate(&server, &key, "eth-depeg").await;

        assert_eq!(first.status, StatusCode::OK);
        assert!(!is_marked_replay(&first));
        assert!(is_marked_replay(&retry), "{retry:?}");
        assert!(!retry.is_replay(), "only the configured header marks a replay");
        assert_eq!(retry.status, first.status);
        assert_eq!(retry.body, first.body);
        assert_eq!(usage.runs(), (0, 1, 0));
    }

    #[actix_web::test]
    async fn the_same_key_with_another_body_runs_as_a_distinct_request() {
        let (server, usage) = start();
        let key = new_key();

        let depeg = simulate(&server, &key, "eth-depeg").await;
        let crash = simulate(&server, &key, "btc-crash").await;
        let depeg_retry = simulate(&server, &key, "eth-depeg").await;
        let crash_retry = simulate(&server, &key, "btc-crash").await;

        assert_eq!((depeg.status, crash.status), (StatusCode::OK, StatusCode::OK));
        assert!(!is_marked_replay(&crash), "no stale reply for new inputs");
        assert_eq!(crash.json()["scenario"], "btc-crash");
        assert_ne!(crash.json()["simulation_id"], depeg.json()["simulation_id"]);
        assert_eq!(depeg_retry.body, depeg.body);
        assert_eq!(crash_retry.body, crash.body);
        assert_eq!(usage.runs(), (0, 2, 0));
    }

    #[actix_web::test]
    async fn a_duplicate_in_flight_gets_409_with_retry_after_1_at_once() {
        let (server, usage) = start();
        let key = new_key();
        let slow = simulation(&server, &key)
            .insert_header(("X-Demo-Delay-Ms", "1500"))
            .content_type("application/json");
        let first = actix_web::rt::spawn(send(slow, json!({ "scenario": "eth-depeg" }).to_string()));
        wait_until(|| usage.runs().1 == 1).await;

        let duplicate = simulate(&server, &key, "eth-depeg").await;

        // A 409 rather than the replay: the duplicate did not wait for the first to finish.
        assert_eq!(duplicate.status, StatusCode::CONFLICT);
        assert_eq!(duplicate.header("retry-after"), Some("1"));
        assert_eq!(
            duplicate.json(),
            json!({ "error": "duplicate request in flight; retry after a brief delay", "code": "idempotency_in_flight" })
        );

        let first = first.await.expect("the first request");
        let retry = simulate(&server, &key, "eth-depeg").await;
        assert_eq!(first.status, StatusCode::OK);
        assert!(is_marked_replay(&retry));
        assert_eq!(retry.body, first.body);
        assert_eq!(usage.runs(), (0, 1, 0));
    }

    #[actix_web::test]
    async fn a_failed_request_is_not_cached_and_the_same_key_runs_again() {
        let (server, usage) = start();
        let key = new_key();
        let failing = simulation(&server, &key).insert_header(("X-Demo-Fail", "true"));

        let failed = send_json(failing, &json!({ "scenario": "eth-depeg" })).await;
        let retry = simulate(&server, &key, "eth-depeg").await;
        let again = simulate(&server, &key, "eth-depeg").await;

        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.status, StatusCode::OK);
        assert!(
            !is_marked_replay(&retry),
            "the 503 was not replayed: the operation ran again"
        );
        assert!(is_marked_replay(&again));
        assert_eq!(again.body, retry.body);
        assert_eq!(usage.runs(), (0, 2, 0));
    }

    #[actix_web::test]
    async fn an_execution_step_without_a_decision_trace_is_400_and_its_key_stays_usable() {
        let (server, usage) = start();
        let key = new_key();
        let step = || {
            server
                .post("/v2/executions/steps")
                .insert_header(("X-Idempotency-Key", key.as_str()))
        };
        let traced = || step().insert_header(("X-Decision-Trace-ID", "trace-7"));

        let untraced = send_json(step(), &json!({ "step": "swap" })).await;
        let first = send_json(traced(), &json!({ "step": "swap" })).await;
        let retry = send_json(traced(), &json!({ "step": "swap" })).await;

        assert_eq!(untraced.status, StatusCode::BAD_REQUEST);
        assert_eq!(untraced.json()["code"], "decision_trace_missing");
        assert_eq!(first.status, StatusCode::OK);
        assert!(!is_marked_replay(&first), "the 400 was not cached");
        assert_eq!(first.json()["decision_trace_id"], "trace-7");
        assert!(is_marked_replay(&retry));
        assert_eq!(retry.body, first.body);
        assert_eq!(usage.runs(), (0, 0, 1));
    }
}

/// the Attestix proposal, one middleware for every POST.
mod attestix {
    use actix_web::http::{Method, StatusCode};
    use actix_web::web;
    use serde_json::json;

    use crate::middleware_all_posts::{configure, idempotency, State};
    use crate::support::{new_key, send, send_concurrently, send_json, serve_recipe, Reply, TestServer};

    fn start() -> (TestServer, web::Data<State>) {
        let state = web::Data::new(State::default());
        let server = serve_recipe(state.clone(), idempotency(), configure);
        (server, state)
    }

    async fn create_identity(server: &TestServer, key: &str, name: &str) -> Reply {
        let req = server.post("/v1/identities").insert_header(("Idempotency-Key", key));
        send_json(req, &json!({ "display_name": name })).await
    }

    #[actix_web::test]
    async fn every_post_replays_its_first_2xx_without_an_annotation() {
        let (server, state) = start();
        let (identity_key, credential_key) = (new_key(), new_key());

        let identity = create_identity(&server, &identity_key, "agent-7").await;
        let identity_retry = create_identity(&server, &identity_key, "agent-7").await;
        let uait = identity.json()["uait_id"].as_str().unwrap().to_owned();
        let issue = || {
            server
                .post("/v1/credentials/issue")
                .insert_header(("Idempotency-Key", credential_key.as_str()))
        };
        let claims = json!({ "subject": uait, "claims": { "role": "auditor" } });
        let credential = send_json(issue(), &claims).await;
        let credential_retry = send_json(issue(), &claims).await;

        assert_eq!(identity.status, StatusCode::CREATED);
        assert!(identity_retry.is_replay());
        assert_eq!(identity_retry.body, identity.body, "no duplicate UAIT");
        assert_eq!(credential.status, StatusCode::CREATED);
        assert!(credential_retry.is_replay());
        assert_eq!(credential_retry.body, credential.body, "no second credential");
        assert_eq!(state.runs(), (1, 1, 0));

        let stored = send(
            server.request(Method::GET, &format!("/v1/identities/{uait}")),
            String::new(),
        )
        .await;
        assert_eq!(stored.status, StatusCode::OK);
    }

    #[actix_web::test]
    async fn a_reused_key_with_another_body_is_409() {
        let (server, state) = start();
        let key = new_key();

        create_identity(&server, &key, "agent-7").await;
        let conflict = create_identity(&server, &key, "agent-8").await;

        assert_eq!(conflict.status, StatusCode::CONFLICT);
        assert_eq!(conflict.problem_code(), "idempotency_conflict");
        assert!(
            conflict.json()["detail"].is_string(),
            "a `detail`, as FastAPI clients expect"
        );
        assert_eq!(state.runs(), (1, 0, 0));
    }

    #[actix_web::test]
    async fn a_post_without_the_header_behaves_as_today() {
        let (server, state) = start();

        let first = send_json(server.post("/v1/identities"), &json!({ "display_name": "agent-7" })).await;
        let second = send_json(server.post("/v1/identities"), &json!({ "display_name": "agent-7" })).await;

        assert_eq!(
            (first.status, second.status),
            (StatusCode::CREATED, StatusCode::CREATED)
        );
        assert_ne!(first.body, second.body);
        assert_eq!(state.runs(), (2, 0, 0));
    }

    #[actix_web::test]
    async fn only_post_is_intercepted() {
        let (server, state) = start();
        let key = new_key();
        let revoke = || {
            server
                .request(Method::DELETE, "/v1/identities/uait:1")
                .insert_header(("Idempotency-Key", key.as_str()))
        };

        let first = send(revoke(), String::new()).await;
        let second = send(revoke(), String::new()).await;

        assert_eq!(
            (first.status, second.status),
            (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT)
        );
        assert!(!second.is_replay());
        assert_eq!(state.runs(), (0, 0, 2));
    }

    #[actix_web::test]
    async fn a_rejected_body_is_not_cached_and_the_corrected_request_reuses_the_key() {
        let (server, state) = start();
        let key = new_key();

        let rejected = server
            .post("/v1/identities")
            .insert_header(("Idempotency-Key", key.as_str()));
        let rejected = send(
            rejected.content_type("application/json"),
            "{\"display_name\":".to_owned(),
        )
        .await;
        let corrected = create_identity(&server, &key, "agent-7").await;
        let retry = create_identity(&server, &key, "agent-7").await;

        assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
        assert_eq!(corrected.status, StatusCode::CREATED);
        assert!(!corrected.is_replay());
        assert!(retry.is_replay());
        assert_eq!(retry.body, corrected.body);
        assert_eq!(state.runs(), (1, 0, 0));
    }

    #[actix_web::test]
    async fn the_same_key_on_another_post_is_a_conflict_not_a_second_execution() {
        let (server, state) = start();
        let key = new_key();

        create_identity(&server, &key, "agent-7").await;
        let issue = server
            .post("/v1/credentials/issue")
            .insert_header(("Idempotency-Key", key.as_str()));
        let other_path = send_json(issue, &json!({ "subject": "uait:1", "claims": {} })).await;

        assert_eq!(other_path.status, StatusCode::CONFLICT);
        assert_eq!(other_path.problem_code(), "idempotency_conflict");
        assert_eq!(state.runs(), (1, 0, 0));
    }

    #[actix_web::test]
    async fn two_hundred_simultaneous_duplicates_create_one_identity() {
        let (server, state) = start();
        let key = new_key();

        let replies = send_concurrently(200, || {
            let req = server
                .post("/v1/identities")
                .insert_header(("Idempotency-Key", key.as_str()));
            (
                req.content_type("application/json"),
                json!({ "display_name": "agent-7" }).to_string(),
            )
        })
        .await;

        assert_eq!(state.runs(), (1, 0, 0));
        assert!(replies.iter().all(|reply| reply.status == StatusCode::CREATED));
        assert!(replies.iter().all(|reply| reply.body == replies[0].body));
        assert_eq!(replies.iter().filter(|reply| reply.is_replay()).count(), 199);
    }
}
