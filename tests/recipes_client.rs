//! The recipes whose document also describes a client (feature `client`): each mounted from its
//! own file, its server exercised through real HTTP, and its client half (the project's reqwest
//! helper) run against it.

#[path = "http/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../examples/recipes/sdk_create_operations.rs"]
mod sdk_create_operations;

#[allow(dead_code)]
#[path = "../examples/recipes/agent_safe_writes.rs"]
mod agent_safe_writes;

#[allow(dead_code)]
#[path = "../examples/recipes/required_header.rs"]
mod required_header;

#[path = "support/faulty_store.rs"]
mod faulty_store;

/// A layer that loses the first answers after the handler produced them, answering 502 instead,
/// like a gateway whose upstream connection dropped: the operation ran, the client cannot know.
mod lost_answers {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use actix_web::body::{EitherBody, MessageBody};
    use actix_web::dev::{ServiceRequest, ServiceResponse};
    use actix_web::middleware::{from_fn, Next};
    use actix_web::{web, HttpResponse};

    struct ToLose(AtomicUsize);

    /// `configure`'s routes behind a layer that turns the first `count` answers into 502.
    pub fn losing_first(
        count: usize,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    ) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
        let to_lose = web::Data::new(ToLose(AtomicUsize::new(count)));
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(to_lose.clone())
                .service(web::scope("").wrap(from_fn(lose)).configure(configure.clone()));
        }
    }

    async fn lose<B: MessageBody + 'static>(
        req: ServiceRequest,
        next: Next<B>,
    ) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
        let to_lose = req.app_data::<web::Data<ToLose>>().cloned().expect("registered");
        let response = next.call(req).await?;
        let lost = to_lose
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
            .is_ok();
        if !lost {
            return Ok(response.map_into_left_body());
        }
        let (req, _answer) = response.into_parts();
        Ok(ServiceResponse::new(req, HttpResponse::BadGateway().finish()).map_into_right_body())
    }
}

/// the Atlas SDK and Control Plane, create operations that wait for a running
/// duplicate, and an SDK that keeps one key across retries.
mod atlas {
    use actix_web::http::StatusCode;
    use actix_web::web;
    use idempotent_actix::client::ResponseExt;
    use serde_json::json;

    use crate::lost_answers::losing_first;
    use crate::sdk_create_operations::{
        configure, create_deployment, idempotency, sdk_client, ControlPlane, DeploymentCreate,
    };
    use crate::support::{new_key, send_concurrently, send_json, serve_unconfigured as serve, TestServer};

    fn routes(control_plane: &web::Data<ControlPlane>) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
        let (control_plane, idempotency) = (control_plane.clone(), idempotency());
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(control_plane.clone()).app_data(idempotency.clone());
            configure(cfg);
        }
    }

    fn start() -> (TestServer, web::Data<ControlPlane>) {
        let control_plane = web::Data::new(ControlPlane::default());
        (serve(routes(&control_plane)), control_plane)
    }

    fn deployment() -> DeploymentCreate {
        DeploymentCreate {
            agent_definition_id: "def-1".into(),
            name: "my-deployment".into(),
            environment: "production".into(),
        }
    }

    fn deployment_json() -> serde_json::Value {
        serde_json::to_value(deployment()).unwrap()
    }

    #[actix_web::test]
    async fn two_hundred_duplicates_sent_at_once_wait_for_one_deployment() {
        let (server, control_plane) = start();
        let key = new_key();

        let replies = send_concurrently(200, || {
            let req = server
                .post("/api/v1/deployments")
                .insert_header(("Idempotency-Key", key.as_str()))
                .insert_header(("X-Demo-Delay-Ms", "300"))
                .content_type("application/json");
            (req, deployment_json().to_string())
        })
        .await;

        assert_eq!(control_plane.deployments_created(), 1);
        assert!(
            replies.iter().all(|reply| reply.status == StatusCode::CREATED),
            "every duplicate waited for the result"
        );
        assert!(replies.iter().all(|reply| reply.body == replies[0].body));
        assert_eq!(replies.iter().filter(|reply| reply.is_replay()).count(), 199);
    }

    #[actix_web::test]
    async fn a_replayed_append_does_not_append_twice() {
        let (server, control_plane) = start();
        let (key, plan) = (new_key(), format!("/api/v1/plans/{}/tasks", new_key()));
        let append = |key: &str| server.post(&plan).insert_header(("Idempotency-Key", key.to_owned()));
        let tasks = json!({ "tasks": ["fetch", "summarise"] });

        let first = send_json(append(&key), &tasks).await;
        let retry = send_json(append(&key), &tasks).await;
        let next_batch = send_json(append(&new_key()), &tasks).await;

        assert_eq!(first.json()["total_tasks"], 2);
        assert!(retry.is_replay());
        assert_eq!(retry.body, first.body);
        assert_eq!(next_batch.json()["total_tasks"], 4, "a new key is a new operation");
        assert_eq!(control_plane.appends(), 2);
    }

    #[actix_web::test]
    async fn a_key_of_255_characters_is_accepted_and_256_is_400() {
        let (server, control_plane) = start();
        let create = |key: String| {
            server
                .post("/api/v1/deployments")
                .insert_header(("Idempotency-Key", key))
        };

        let longest = send_json(create("d".repeat(255)), &deployment_json()).await;
        let too_long = send_json(create("d".repeat(256)), &deployment_json()).await;

        assert_eq!(longest.status, StatusCode::CREATED);
        assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
        assert_eq!(too_long.problem_code(), "idempotency_key_invalid");
        assert_eq!(control_plane.deployments_created(), 1);
    }

    #[actix_web::test]
    async fn the_sdk_keeps_a_business_key_across_a_lost_answer_and_gets_the_first_result() {
        let control_plane = web::Data::new(ControlPlane::default());
        let server = serve(losing_first(1, routes(&control_plane)));
        let key = format!("deploy-my-deployment-{}", new_key());

        let response = create_deployment(&sdk_client(), server.base(), &deployment(), Some(&key))
            .await
            .expect("an answer");

        assert_eq!(response.status(), StatusCode::CREATED.as_u16());
        let outcome = response.retry_outcome().expect("a POST goes through the retry layer");
        assert_eq!(outcome.key(), key);
        assert_eq!(outcome.attempts(), 2, "the 502 was retried once");
        assert!(
            outcome.replayed(),
            "the retry got the stored result of the first attempt"
        );
        assert_eq!(control_plane.deployments_created(), 1);
    }

    #[actix_web::test]
    async fn auto_keys_are_a_fresh_uuid_v4_per_call() {
        let (server, control_plane) = start();
        let client = sdk_client();

        let first = create_deployment(&client, server.base(), &deployment(), None)
            .await
            .unwrap();
        let second = create_deployment(&client, server.base(), &deployment(), None)
            .await
            .unwrap();

        let keys: Vec<String> = [&first, &second]
            .iter()
            .map(|response| response.retry_outcome().unwrap().key().to_owned())
            .collect();
        for key in &keys {
            assert_eq!(uuid::Uuid::parse_str(key).unwrap().get_version_num(), 4);
        }
        assert_ne!(keys[0], keys[1], "no cross-call protection, as documented");
        assert!(!second.was_replayed());
        assert_eq!(control_plane.deployments_created(), 2);
    }
}

/// PacSpace, 202 for a running key, environments apart, webhooks de-duplicated, and an
/// agent that retries only what is transient.
mod pacspace {
    use std::sync::Arc;

    use actix_web::http::StatusCode;
    use actix_web::web;
    use idempotent_actix::client::ResponseExt;
    use idempotent_actix::{MemoryStore, Store};
    use serde_json::json;

    use crate::agent_safe_writes::{
        agent_client, configure, emit, idempotency_key, Delta, Environment, Environments, Ledger,
    };
    use crate::faulty_store::FaultyStore;
    use crate::lost_answers::losing_first;
    use crate::support::{
        new_key, send, send_concurrently, send_json, serve_unconfigured as serve, wait_until, Reply, TestServer,
    };

    fn routes(
        ledger: &web::Data<Ledger>,
        store: Arc<dyn Store>,
    ) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
        let (ledger, environments) = (ledger.clone(), Environments::sharing(store));
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(ledger.clone());
            configure(environments.clone())(cfg);
        }
    }

    fn start() -> (TestServer, web::Data<Ledger>) {
        let ledger = web::Data::new(Ledger::default());
        (serve(routes(&ledger, Arc::new(MemoryStore::default()))), ledger)
    }

    fn delta(reference_id: &str, amount: f64) -> Delta {
        Delta {
            customer_id: "cus_1".into(),
            delta: amount,
            reason: "api-call".into(),
            reference_id: Some(reference_id.into()),
        }
    }

    fn post_delta(server: &TestServer, api_key: &str, key: &str) -> awc::ClientRequest {
        server
            .post("/api/v1/balance/delta")
            .insert_header(("X-Api-Key", api_key))
            .insert_header(("Idempotency-Key", key))
    }

    async fn send_delta(server: &TestServer, api_key: &str, key: &str, delta: &Delta) -> Reply {
        send_json(post_delta(server, api_key, key), &serde_json::to_value(delta).unwrap()).await
    }

    async fn deliver(server: &TestServer, environment: &str, event_id: &str) -> Reply {
        let req = server
            .post(&format!("/webhooks/pacspace/{environment}"))
            .insert_header(("X-Event-ID", event_id));
        send_json(req, &json!({ "type": "balance.updated" })).await
    }

    #[actix_web::test]
    async fn a_duplicate_of_a_running_write_gets_202_and_a_later_retry_the_original() {
        let (server, ledger) = start();
        let (key, delta) = (new_key(), delta("ref-1", -1.0));
        let slow = post_delta(&server, "pk_live_demo", &key)
            .insert_header(("X-Demo-Delay-Ms", "800"))
            .content_type("application/json");
        let first = actix_web::rt::spawn(send(slow, serde_json::to_string(&delta).unwrap()));
        wait_until(|| ledger.deltas() == 1).await;

        let duplicate = send_delta(&server, "pk_live_demo", &key, &delta).await;
        let first = first.await.expect("the first request");
        let later = send_delta(&server, "pk_live_demo", &key, &delta).await;

        assert_eq!(duplicate.status, StatusCode::ACCEPTED);
        assert_eq!(duplicate.json()["code"], "IDEMPOTENCY_PENDING", "what the SDK reads");
        assert_eq!(duplicate.json()["retryAfterSeconds"], 1);
        assert_eq!(duplicate.header("retry-after"), Some("1"));
        assert_eq!(first.status, StatusCode::CREATED);
        assert!(later.is_replay());
        assert_eq!(later.body, first.body);
        assert_eq!(ledger.deltas(), 1);
    }

    #[actix_web::test]
    async fn a_completed_key_with_another_body_is_409_conflict() {
        let (server, ledger) = start();
        let key = new_key();

        send_delta(&server, "pk_live_demo", &key, &delta("ref-1", -1.0)).await;
        let changed = send_delta(&server, "pk_live_demo", &key, &delta("ref-1", -2.0)).await;

        assert_eq!(changed.status, StatusCode::CONFLICT);
        assert_eq!(changed.json()["success"], false);
        assert_eq!(changed.json()["error"]["code"], "IDEMPOTENCY_CONFLICT");
        assert_eq!(ledger.deltas(), 1);
    }

    #[actix_web::test]
    async fn every_write_endpoint_replays_including_checkpoints() {
        let (server, ledger) = start();
        let key = new_key();
        let checkpoint = || {
            server
                .post("/api/v1/balance/checkpoint")
                .insert_header(("X-Api-Key", "pk_live_demo"))
                .insert_header(("Idempotency-Key", key.as_str()))
        };

        let first = send_json(checkpoint(), &json!({ "period": "2024-06" })).await;
        let retry = send_json(checkpoint(), &json!({ "period": "2024-06" })).await;

        assert_eq!(first.status, StatusCode::CREATED);
        assert!(retry.is_replay());
        assert_eq!(retry.body, first.body);
        assert_eq!(ledger.checkpoints(), 1);
    }

    #[actix_web::test]
    async fn sandbox_and_production_never_share_a_key_in_one_store() {
        let (server, ledger) = start();
        let (key, delta) = (new_key(), delta("ref-1", -1.0));

        let live = send_delta(&server, "pk_live_demo", &key, &delta).await;
        let test = send_delta(&server, "pk_test_demo", &key, &delta).await;
        let live_retry = send_delta(&server, "pk_live_demo", &key, &delta).await;
        let test_retry = send_delta(&server, "pk_test_demo", &key, &delta).await;

        assert_eq!((live.status, test.status), (StatusCode::CREATED, StatusCode::CREATED));
        assert!(!test.is_replay(), "Sandbox never sees Production's response");
        assert_eq!(live.json()["data"]["livemode"], true);
        assert_eq!(test.json()["data"]["livemode"], false);
        assert_eq!(live_retry.body, live.body);
        assert_eq!(test_retry.body, test.body);
        assert_eq!(ledger.deltas(), 2);
    }

    #[actix_web::test]
    async fn two_apps_sharing_the_store_agree_within_an_environment_and_stay_apart_across() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let (ledger_a, ledger_b) = (web::Data::new(Ledger::default()), web::Data::new(Ledger::default()));
        let replica_a = serve(routes(&ledger_a, Arc::clone(&store)));
        let replica_b = serve(routes(&ledger_b, store));
        let (key, delta) = (new_key(), delta("ref-1", -1.0));

        let live_on_a = send_delta(&replica_a, "pk_live_demo", &key, &delta).await;
        let live_on_b = send_delta(&replica_b, "pk_live_demo", &key, &delta).await;
        let test_on_b = send_delta(&replica_b, "pk_test_demo", &key, &delta).await;

        assert!(live_on_b.is_replay(), "the live: record is shared by both apps");
        assert_eq!(live_on_b.body, live_on_a.body);
        assert!(!test_on_b.is_replay(), "the test: namespace is apart");
        assert_eq!((ledger_a.deltas(), ledger_b.deltas()), (1, 1));
    }

    #[actix_web::test]
    async fn a_store_outage_is_503_service_unavailable_with_retry_after_seconds_for_the_sdk() {
        let ledger = web::Data::new(Ledger::default());
        let store = FaultyStore::with(|faults| &faults.down);
        let server = serve(routes(&ledger, Arc::new(store)));

        let unavailable = send_delta(&server, "pk_live_demo", &new_key(), &delta("ref-1", -1.0)).await;

        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        let error = &unavailable.json()["error"];
        assert_eq!(error["code"], "SERVICE_UNAVAILABLE", "{error}");
        assert_eq!(
            error["retryAfterSeconds"], 1,
            "the delay the SDK waits before its retry"
        );
        assert_eq!(unavailable.header("retry-after"), Some("1"));
        assert_eq!(ledger.deltas(), 0);
    }

    #[actix_web::test]
    async fn an_unknown_api_key_is_401() {
        let (server, ledger) = start();

        let unknown = send_delta(&server, "sk_other", &new_key(), &delta("ref-1", -1.0)).await;

        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        assert_eq!(unknown.json()["error"]["code"], "INVALID_API_KEY");
        assert_eq!(ledger.deltas(), 0);
    }

    #[actix_web::test]
    async fn a_redelivered_webhook_event_is_queued_once_and_answered_200_duplicate() {
        let (server, ledger) = start();
        let event_id = format!("evt_{}", new_key());

        let first = deliver(&server, "live", &event_id).await;
        let redelivery = deliver(&server, "live", &event_id).await;

        assert_eq!((first.status, redelivery.status), (StatusCode::OK, StatusCode::OK));
        assert_eq!(
            first.json(),
            json!({ "received": true }),
            "the hook never runs on the first"
        );
        assert!(!first.is_replay());
        assert!(redelivery.is_replay());
        assert_eq!(redelivery.json(), json!({ "received": true, "duplicate": true }));
        assert_eq!(
            redelivery.header_list(&["date", "content-length", "idempotency-replayed"]),
            first.header_list(&["date", "content-length"]),
            "status and headers kept"
        );
        assert_eq!(ledger.events(), vec![event_id]);
    }

    #[actix_web::test]
    async fn two_hundred_simultaneous_deliveries_of_one_event_are_queued_once() {
        let (server, ledger) = start();
        let event_id = format!("evt_{}", new_key());

        let replies = send_concurrently(200, || {
            let req = server
                .post("/webhooks/pacspace/live")
                .insert_header(("X-Event-ID", event_id.as_str()))
                .content_type("application/json");
            (req, json!({ "type": "balance.updated" }).to_string())
        })
        .await;

        assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
        let duplicate = json!({ "received": true, "duplicate": true });
        let duplicates = replies.iter().filter(|reply| reply.json() == duplicate).count();
        assert_eq!(duplicates, 199, "the replays of waiters go through the hook too");
        assert_eq!(ledger.events(), vec![event_id]);
    }

    #[actix_web::test]
    async fn a_webhook_without_x_event_id_is_400_and_event_ids_stay_in_their_environment() {
        let (server, ledger) = start();
        let event_id = format!("evt_{}", new_key());

        let anonymous = send_json(server.post("/webhooks/pacspace/live"), &json!({})).await;
        deliver(&server, "live", &event_id).await;
        let sandbox = deliver(&server, "test", &event_id).await;

        assert_eq!(anonymous.status, StatusCode::BAD_REQUEST);
        assert_eq!(anonymous.problem_code(), "idempotency_key_missing");
        assert!(
            !sandbox.is_replay(),
            "a Sandbox event id never collides with Production's"
        );
        assert_eq!(ledger.events(), vec![event_id.clone(), event_id]);
    }

    #[actix_web::test]
    async fn the_agent_key_is_environment_and_reference_id_and_survives_a_lost_answer() {
        let ledger = web::Data::new(Ledger::default());
        let server = serve(losing_first(1, routes(&ledger, Arc::new(MemoryStore::default()))));
        let reference_id = format!("acme:emit:2024-06:{}", new_key());
        let delta = delta(&reference_id, -1.0);

        let response = emit(&agent_client(), server.base(), "pk_live_demo", &delta)
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::CREATED.as_u16());
        let outcome = response.retry_outcome().unwrap();
        assert_eq!(outcome.key(), format!("live:{reference_id}"));
        assert_eq!(outcome.key(), idempotency_key(Environment::Live, &reference_id));
        assert_eq!(outcome.attempts(), 2);
        assert!(outcome.replayed());
        assert_eq!(ledger.deltas(), 1);
    }

    #[actix_web::test]
    async fn the_agent_never_retries_a_conflict() {
        let (server, ledger) = start();
        let client = agent_client();
        let reference = format!("ref-{}", new_key());

        emit(&client, server.base(), "pk_test_demo", &delta(&reference, -1.0))
            .await
            .unwrap();
        let mutated = emit(&client, server.base(), "pk_test_demo", &delta(&reference, -5.0))
            .await
            .unwrap();

        assert_eq!(mutated.status(), StatusCode::CONFLICT.as_u16());
        assert_eq!(mutated.retry_outcome().unwrap().attempts(), 1);
        assert_eq!(ledger.deltas(), 1);
    }

    #[actix_web::test]
    async fn the_agent_gets_the_202_back_and_calls_again_later_with_the_same_key() {
        let (server, ledger) = start();
        let client = agent_client();
        let reference_id = format!("ref-{}", new_key());
        let delta = delta(&reference_id, -1.0);
        let key = idempotency_key(Environment::Live, &reference_id);
        let slow = post_delta(&server, "pk_live_demo", &key)
            .insert_header(("X-Demo-Delay-Ms", "800"))
            .content_type("application/json");
        let first = actix_web::rt::spawn(send(slow, serde_json::to_string(&delta).unwrap()));
        wait_until(|| ledger.deltas() == 1).await;

        let accepted = emit(&client, server.base(), "pk_live_demo", &delta).await.unwrap();
        let first = first.await.expect("the first request");
        let later = emit(&client, server.base(), "pk_live_demo", &delta).await.unwrap();

        assert_eq!(accepted.status(), StatusCode::ACCEPTED.as_u16());
        assert_eq!(
            accepted.retry_outcome().unwrap().attempts(),
            1,
            "the helper does not retry a 202"
        );
        assert!(later.was_replayed());
        assert_eq!(later.bytes().await.unwrap(), first.body);
        assert_eq!(ledger.deltas(), 1);
    }
}

/// With the client helper: Alterscope tells clients to wait `Retry-After` and retry
/// an in-flight 409 with the same key.
mod alterscope_client {
    use std::time::Duration;

    use actix_web::http::StatusCode;
    use actix_web::web;
    use idempotent_actix::client::reqwest_middleware::reqwest;
    use idempotent_actix::client::reqwest_middleware::reqwest::header::HeaderName;
    use idempotent_actix::client::reqwest_middleware::ClientBuilder;
    use idempotent_actix::client::{IdempotentRetry, ResponseExt, RetryPolicy};
    use serde_json::json;

    use crate::required_header::{configure, idempotency, Usage};
    use crate::support::{new_key, send, serve_recipe, wait_until};

    /// The app's own error envelope (`{"error", "code"}` as `application/json`, through
    /// `Idempotency::error_response`) hides the problem body's `code`; the in-flight 409 still
    /// carries `Retry-After`, which a conflict never does, so the helper retries it.
    #[actix_web::test]
    async fn the_client_retries_an_in_flight_409_rendered_by_the_apps_error_hook() {
        let usage = web::Data::new(Usage::default());
        let server = serve_recipe(usage.clone(), idempotency(), configure);
        let key = new_key();
        let body = json!({ "scenario": "eth-depeg" }).to_string();
        let slow = server
            .post("/v2/simulations")
            .insert_header(("X-Idempotency-Key", key.as_str()))
            .insert_header(("X-Demo-Delay-Ms", "500"))
            .content_type("application/json");
        let first = actix_web::rt::spawn(send(slow, body.clone()));
        wait_until(|| usage.runs().1 == 1).await;
        let client = ClientBuilder::new(reqwest::Client::new())
            .with(
                IdempotentRetry::new(RetryPolicy::default().max_elapsed(Duration::from_secs(5)))
                    .key_header(HeaderName::from_static("x-idempotency-key"))
                    .replay_header(HeaderName::from_static("x-idempotency-replayed")),
            )
            .build();

        let duplicate = client
            .post(format!("{}/v2/simulations", server.base()))
            .header("X-Idempotency-Key", key.as_str())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        first.await.expect("the first request");

        assert_eq!(
            duplicate.status(),
            StatusCode::OK.as_u16(),
            "retried after Retry-After: 1"
        );
        assert!(duplicate.was_replayed());
        assert_eq!(usage.runs(), (0, 1, 0));
    }
}
