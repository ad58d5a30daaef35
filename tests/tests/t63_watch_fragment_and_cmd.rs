//! Watch responses larger than `--max-request-bytes` split into fragments, and
//! `etcdctl watch KEY -- CMD` running a command per event. Expected outputs come
//! from etcd 3.4.23 with etcdctl 3.4.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{DeleteOptions, EventType, WatchOptions, WatchResponse};
use cairn_tests::{wait_for_watchers, CtlProcess, Server, ServerOpts};

const DEADLINE: Duration = Duration::from_secs(20);

/// 700 KiB: three of them exceed the default 1.5 MiB `--max-request-bytes`,
/// two of them do not.
const BIG: usize = 700 * 1024;

/// The `fragment` flag of a watch response. `etcd-client` keeps it private, so
/// it is read from the `Debug` text, which stops being produced as soon as the
/// flag has been seen (the events after it hold megabytes of values).
fn fragment(resp: &WatchResponse) -> bool {
    struct Probe {
        text: String,
        found: Option<bool>,
    }
    impl std::fmt::Write for Probe {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.text.push_str(s);
            if let Some(at) = self.text.find("fragment: ") {
                let rest = &self.text[at + "fragment: ".len()..];
                if rest.starts_with("true") {
                    self.found = Some(true);
                } else if rest.starts_with("false") {
                    self.found = Some(false);
                }
                if self.found.is_some() {
                    return Err(std::fmt::Error);
                }
            } else if self.text.len() > 4096 {
                let keep = self.text.len() - 16;
                let keep = (keep..self.text.len())
                    .find(|&i| self.text.is_char_boundary(i))
                    .unwrap_or(self.text.len());
                self.text.drain(..keep);
            }
            Ok(())
        }
    }
    let mut probe = Probe {
        text: String::new(),
        found: None,
    };
    let _ = write!(probe, "{resp:?}");
    probe
        .found
        .unwrap_or_else(|| panic!("no `fragment` field in the Debug text of a WatchResponse"))
}

fn big_value(i: u8) -> Vec<u8> {
    vec![b'a' + i; BIG]
}

#[tokio::test]
async fn oversized_response_is_split_into_fragments() {
    let server = Server::start(ServerOpts::new());
    let mut client = server.client().await;
    for i in 1..=3u8 {
        client
            .put(format!("big/{i}"), big_value(i), None)
            .await
            .expect("put a 700 KiB value"); // revisions 2..=4
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_fragment();
    let mut stream = client.watch("big/", Some(options)).await.expect("watch");
    let created = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("created response before the deadline")
        .expect("watch stream error")
        .expect("watch stream ended");
    assert!(created.created(), "{:?}", created.header());

    let deleted = client
        .delete("big/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete big/ --prefix");
    assert_eq!(deleted.deleted(), 3);
    let revision = deleted.header().expect("header").revision();
    assert_eq!(revision, 5);

    let end = Instant::now() + DEADLINE;
    let mut responses = Vec::new();
    let mut events = 0;
    while events < 3 {
        let left = end.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, stream.message())
            .await
            .expect("all fragments before the deadline")
            .expect("watch stream error")
            .expect("watch stream ended");
        assert!(!resp.canceled(), "canceled: {}", resp.cancel_reason());
        assert_eq!(resp.watch_id(), created.watch_id());
        events += resp.events().len();
        responses.push(resp);
    }

    // etcd packs events while the response stays under the limit: 2 + 1.
    let sizes: Vec<usize> = responses.iter().map(|r| r.events().len()).collect();
    assert_eq!(sizes, vec![2, 1], "events per response");
    let flags: Vec<bool> = responses.iter().map(fragment).collect();
    assert_eq!(flags, vec![true, false], "fragment flags");
    for resp in &responses {
        assert_eq!(resp.header().expect("header").revision(), revision);
    }

    let all: Vec<_> = responses.iter().flat_map(|r| r.events()).collect();
    for (i, event) in (1..=3u8).zip(&all) {
        assert_eq!(event.event_type(), EventType::Delete);
        let kv = event.kv().expect("kv");
        assert_eq!(kv.key_str().unwrap(), format!("big/{i}"));
        assert_eq!(kv.mod_revision(), revision);
        assert!(kv.value().is_empty());
        let prev = event.prev_kv().expect("prev_kv");
        assert_eq!(prev.key_str().unwrap(), format!("big/{i}"));
        assert_eq!(prev.mod_revision(), 1 + i64::from(i));
        assert_eq!(prev.value().len(), BIG);
        assert!(
            prev.value() == big_value(i).as_slice(),
            "prev_kv value of big/{i} differs"
        );
    }
}

#[test]
fn exec_command_runs_once_per_event_with_watch_env() {
    let server = Server::start(ServerOpts::new());
    let watch = CtlProcess::start(
        &server,
        &[
            "watch",
            "cmdkey",
            "--",
            "/bin/sh",
            "-c",
            r#"echo "got $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE $ETCD_WATCH_EVENT_TYPE@$ETCD_WATCH_REVISION""#,
        ],
    );
    wait_for_watchers(&server, 1.0);
    server.etcdctl(&["put", "cmdkey", "v1"]).ok(); // revision 2
    server.etcdctl(&["put", "other", "x"]).ok(); // revision 3
    server.etcdctl(&["del", "cmdkey"]).ok(); // revision 4
    let expected = [
        "PUT",
        "cmdkey",
        "v1",
        r#"got "cmdkey"="v1" "PUT"@2"#,
        "DELETE",
        "cmdkey",
        "",
        r#"got "cmdkey"="" "DELETE"@4"#,
    ];
    assert_eq!(watch.lines(expected.len()), expected);
}
