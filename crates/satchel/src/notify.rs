//! The HTTP side of takeout webhooks (`satchel_domain::notify::Transport`): one POST with a short
//! timeout, no redirects followed, no proxy from the environment, and the address rule applied to
//! what is actually connected to: an IP literal is checked before sending, a name through the
//! client's resolver, which hands over only public addresses (so a name re-pointed at a private
//! address after the request was accepted is refused at delivery; `--notify-allow-private` lifts
//! it). The answer's body is never read: only its status counts.

use satchel_domain::notify::{is_public, Sent, Transport};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub struct HttpTransport {
    client: reqwest::Client,
    allow_private: bool,
}

/// Resolves names as the system does, keeping only the addresses webhooks may go to.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private or link-local addresses, which \
                     this server does not call (--notify-allow-private)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl HttpTransport {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(0);
        if !allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(HttpTransport {
            client: b.build()?,
            allow_private,
        })
    }
}

/// An error and its causes on one line (reqwest's own message names only the outermost).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn post(&self, url: &str, headers: &[(&'static str, String)], body: Vec<u8>) -> Sent {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Sent::Failed(format!("invalid URL: {e}")),
        };
        // The resolver does not see IP literals: they are checked here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        if let Some(ip) = literal {
            if !self.allow_private && !is_public(ip) {
                return Sent::Failed(format!(
                    "{ip} is a loopback, private or link-local address, which this server does \
                     not call (--notify-allow-private)"
                ));
            }
        }
        let mut req = self.client.post(parsed).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            // Dropped unread: a huge or endless body costs nothing.
            Ok(r) => Sent::Status(r.status().as_u16()),
            Err(e) => Sent::Failed(chain(&e.without_url())),
        }
    }
}
