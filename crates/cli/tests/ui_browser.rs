//! `podnet lab ui` in a real browser (root; Debian's headless Chromium driven through
//! chromedriver's W3C WebDriver API): the page loads the shop lab's nodes, Services and policy
//! matrix; clicking a denied pair runs `trace` and shows the policy step broken, clicking an
//! allowed pair shows every step ok; live flows appear. With `PODNET_UI_SCREENSHOTS=DIR` the
//! test saves the screenshots the docs show.

#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a line number

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn podnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podnet")).args(args).output().unwrap()
}

/// A process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podnet(&["lab", "down", "--name", &self.0]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 exchange with JSON in and out (WebDriver speaks nothing else). The answer is
/// read by its Content-Length: chromedriver keeps the connection open.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        answer.extend_from_slice(&buf[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            assert!(n > 0, "{method} {path}: the connection closed in the head");
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse::<usize>().unwrap());
        let have = answer.len() - end - 4;
        if n == 0 || length.is_some_and(|l| have >= l) {
            let json = &answer[end + 4..end + 4 + length.unwrap_or(have).min(have)];
            return serde_json::from_slice(json).unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&answer)));
        }
    }
}

struct Browser {
    port: u16,
    session: String,
    _driver: Killed,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Killed(Command::new("chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100"]}}}});
        let v = http(port, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        Browser { port, session, _driver: driver }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref());
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The element `css` selects, waiting for it to appear.
    fn find(&self, css: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count(&self, css: &str) -> usize {
        self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).as_array().map_or(0, Vec::len)
    }

    fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap_or_default().to_owned()
    }

    fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PODNET_UI_SCREENSHOTS") else {
            return;
        };
        let b64 = self.call("GET", "/screenshot", None).as_str().unwrap().to_owned();
        let path = std::path::Path::new(&dir).join(name);
        let encoded = path.with_extension("b64");
        std::fs::write(&encoded, b64).unwrap();
        let png = Command::new("base64").arg("-d").arg(&encoded).output().unwrap();
        std::fs::write(path, png.stdout).unwrap();
        std::fs::remove_file(encoded).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
    }
}

#[test]
fn the_browser_view_shows_the_lab_and_traces_a_clicked_pair() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip("needs root");
        return;
    }
    if Command::new("chromedriver").arg("--version").output().is_err() || !std::path::Path::new("/usr/bin/chromium").exists() {
        testkit::skip("needs Debian's chromium and chromium-driver");
        return;
    }
    let lab = Lab(format!("ui{}", std::process::id() % 100_000));
    let shop = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop");
    let up = podnet(&["lab", "up", "--name", &lab.0, "-f", shop]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let ui_port = free_port();
    let _ui = Killed(
        Command::new(env!("CARGO_BIN_EXE_podnet"))
            .args(["lab", "ui", "--name", &lab.0, "--listen", &format!("127.0.0.1:{ui_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{ui_port}/"));
    browser.find("body[data-loaded=yes]", Duration::from_secs(20));

    // Nodes, pods by namespace, Services with their endpoints, one matrix cell per pair.
    assert_eq!(browser.count("div.node"), 3);
    let pods = podnet(&["lab", "get", "pods", "-A", "-o", "name", "--name", &lab.0]);
    let pod_count = String::from_utf8_lossy(&pods.stdout).lines().count();
    assert_eq!(browser.count("#matrix td.cell"), pod_count * pod_count);
    let order = browser.find("tr[data-service='production/order-service']", Duration::from_secs(1));
    let row = browser.text(&order);
    assert!(row.contains("10.96.") && row.matches("order-service-").count() == 2, "{row}");
    browser.screenshot("lab-ui.png");

    // The seed's denied pair: debug-pod cannot reach the api (default deny + api-network-policy).
    let api = browser.find("#matrix td.cell.deny[data-from='default/debug-pod'][data-to^='production/api-service-']", Duration::from_secs(1));
    assert_eq!(browser.text(&api), "✗");
    browser.click(&api);
    let result = browser.find("#trace-result", Duration::from_secs(30));
    let text = browser.text(&result);
    assert!(text.starts_with("broken: policy"), "{text}");
    let policy = browser.find("#trace div.step[data-step=policy]", Duration::from_secs(1));
    assert!(browser.text(&policy).starts_with("✗"), "{}", browser.text(&policy));
    browser.screenshot("lab-ui-trace-denied.png");

    // An allowed pair: web → api, every step ok.
    let allowed = browser.find("#matrix td.cell.allow[data-from^='production/web-service-'][data-to^='production/api-service-']", Duration::from_secs(1));
    browser.click(&allowed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = browser.text(&browser.find("#trace-result", Duration::from_secs(30)));
        if text == "every step is ok" {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Pod to pod: nothing to resolve or balance; the policy and the pod's answer are ok.
    assert_eq!((browser.count("#trace div.step"), browser.count("#trace div.step[data-status=broken]")), (5, 0));
    assert_eq!(browser.count("#trace div.step[data-status=ok][data-step=policy]") + browser.count("#trace div.step[data-status=ok][data-step=pod]"), 2);

    // The connections the traces made show up as live flows, dropped ones among them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.count("#flows div.DROPPED") == 0 || browser.count("#flows div.FORWARDED") == 0 {
        assert!(Instant::now() < deadline, "no flows on the page");
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.screenshot("lab-ui-trace-ok.png");
}
