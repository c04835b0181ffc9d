//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it (and ingress-nginx's status writer with it): the holder renews the Lease every retry
//! period; another candidate takes it over once `renewTime + leaseDurationSeconds` has passed.
//! Writes use the Lease's resourceVersion, so two candidates never both win one round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{PostParams, ResourceExt as _};

/// client-go's defaults: a Lease lasts 15 s and is renewed every 2 s.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// See [`LEASE_DURATION`].
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What a candidate does with the Lease as it reads it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    TakeOver,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and renews it: follow them.
    Follow(String),
}

/// Pure: the decision for `me` on a Lease's spec at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::TakeOver };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == me {
        return Decision::Renew;
    }
    let lasts = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_DURATION.as_secs() as i32)));
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    match renewed {
        Some(at) if at.checked_add(lasts).is_ok_and(|until| until > now) => Decision::Follow(holder),
        _ => Decision::TakeOver,
    }
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(client: &kube::Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector { api: Api::namespaced(client.clone(), namespace), name: name.to_owned(), identity: identity.to_owned() }
    }

    /// One round: whether this candidate holds the Lease afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lasts = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(lasts),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return Ok(conflict_is_false(self.api.create(&PostParams::default(), &lease).await)?.is_some());
        };
        let decision = decide(lease.spec.as_ref(), &self.identity, now);
        let spec = lease.spec.get_or_insert_with(Default::default);
        match decision {
            Decision::Follow(_) => return Ok(false),
            Decision::Renew => spec.renew_time = Some(MicroTime(now)),
            Decision::TakeOver => {
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(lasts);
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        // The resourceVersion read above makes this a compare-and-swap.
        let name = lease.name_any();
        Ok(conflict_is_false(self.api.replace(&name, &PostParams::default(), &lease).await)?.is_some())
    }

    /// Runs forever, keeping `leading` true while this candidate holds the Lease. A round that
    /// fails (the API server unreachable) counts as not leading: a leader that cannot renew
    /// stops acting before its Lease can expire for the others.
    pub async fn run(self, leading: Arc<AtomicBool>) {
        loop {
            let now_leading = self.try_lead().await.unwrap_or(false);
            if now_leading != leading.swap(now_leading, Ordering::SeqCst) {
                eprintln!("leader election: {} {} lease {}", self.identity, if now_leading { "holds" } else { "no longer holds" }, self.name);
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }
}

/// A 409 (someone else wrote first) is a lost round, not an error.
fn conflict_is_false(r: Result<Lease, kube::Error>) -> Result<Option<Lease>, kube::Error> {
    match r {
        Ok(l) => Ok(Some(l)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64, lasts: i32) -> LeaseSpec {
        let now = Timestamp::from_second(1_000_000).unwrap();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(lasts),
            renew_time: Some(MicroTime(now.checked_sub(SignedDuration::from_secs(renewed_secs_ago)).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_or_expired_renewed_when_ours_and_followed_otherwise() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&LeaseSpec::default()), "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&spec("a", 100, 15)), "a", now), Decision::Renew, "ours, even expired");
        assert_eq!(decide(Some(&spec("b", 3, 15)), "a", now), Decision::Follow("b".into()));
        assert_eq!(decide(Some(&spec("b", 14, 15)), "a", now), Decision::Follow("b".into()));
        assert_eq!(decide(Some(&spec("b", 15, 15)), "a", now), Decision::TakeOver, "expired at renewTime + duration");
        assert_eq!(decide(Some(&spec("b", 60, 15)), "a", now), Decision::TakeOver);
        // No renew time at all: nobody can be waiting on it.
        let mut unrenewed = spec("b", 0, 15);
        unrenewed.renew_time = None;
        assert_eq!(decide(Some(&unrenewed), "a", now), Decision::TakeOver);
    }
}
