//! The cluster's alarms (etcd's alarm store): raised and cleared through the log, kept in
//! the `alarm` column family and in memory. An active NOSPACE alarm caps the key space:
//! the apply loop refuses every write that would grow it.

use std::collections::BTreeSet;

use cairn_mvcc_store::backend::CF_ALARM;
use cairn_mvcc_store::{Backend, BackendBatch, MvccError};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    request_op, AlarmMember, AlarmType, PutRequest, RequestOp, TxnRequest,
};
use parking_lot::RwLock;

/// etcd's default `--quota-backend-bytes` (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// What a write costs the quota beyond its key and value (etcd's `kvOverhead`).
pub const KV_OVERHEAD_BYTES: u64 = 256;

/// What a lease grant costs the quota (etcd's `leaseOverhead`).
pub const LEASE_OVERHEAD_BYTES: u64 = 64;

/// The bytes `request` could add to the backend (etcd's quota cost): 0 for requests that
/// do not grow the key space, which pass even when the quota is used up.
pub fn write_cost(request: &Request) -> u64 {
    match request {
        Request::Put(p) => put_cost(p),
        Request::Txn(t) => txn_cost(t),
        Request::LeaseGrant(_) => LEASE_OVERHEAD_BYTES,
        _ => 0,
    }
}

/// A put's quota cost.
pub fn put_cost(put: &PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + (put.key.len() + put.value.len()) as u64
}

/// A txn's quota cost: that of its costlier branch (0 without puts).
pub fn txn_cost(txn: &TxnRequest) -> u64 {
    ops_cost(&txn.success).max(ops_cost(&txn.failure))
}

fn ops_cost(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(request_op::Request::RequestPut(p)) => put_cost(p),
            Some(request_op::Request::RequestTxn(t)) => txn_cost(t),
            _ => 0,
        })
        .sum()
}

fn alarm_key(member_id: u64, alarm: i32) -> Vec<u8> {
    [&member_id.to_be_bytes()[..], &alarm.to_be_bytes()[..]].concat()
}

fn parse_key(key: &[u8]) -> Option<(u64, i32)> {
    let member = <[u8; 8]>::try_from(key.get(..8)?).ok()?;
    let alarm = <[u8; 4]>::try_from(key.get(8..)?).ok()?;
    Some((u64::from_be_bytes(member), i32::from_be_bytes(alarm)))
}

/// The active alarms, by member id then alarm type.
#[derive(Debug, Default)]
pub struct Alarms {
    active: RwLock<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    /// The alarms recorded in `backend`.
    pub fn load(backend: &Backend) -> Result<Alarms, MvccError> {
        let alarms = Alarms::default();
        alarms.reload(backend)?;
        Ok(alarms)
    }

    /// Reads the alarms again (after a snapshot replaced the backend's content).
    pub fn reload(&self, backend: &Backend) -> Result<(), MvccError> {
        let mut active = BTreeSet::new();
        for item in backend.scan(CF_ALARM)? {
            let (key, _) = item?;
            match parse_key(&key) {
                Some(alarm) => {
                    active.insert(alarm);
                }
                None => return Err(MvccError::Corrupt(format!("alarm record {key:?}"))),
            }
        }
        *self.active.write() = active;
        Ok(())
    }

    /// The active alarms of type `alarm` (every type for NONE), sorted by member.
    pub fn list(&self, alarm: i32) -> Vec<AlarmMember> {
        self.active
            .read()
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None as i32 || *a == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether the key space is capped: some member ran out of quota.
    pub fn no_space(&self) -> bool {
        self.active
            .read()
            .iter()
            .any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    /// Raises an alarm (recorded in `batch`); `None` when it was already active.
    pub fn activate(
        &self,
        member_id: u64,
        alarm: i32,
        batch: &mut BackendBatch,
    ) -> Option<AlarmMember> {
        if !self.active.write().insert((member_id, alarm)) {
            return None;
        }
        batch.put_cf(CF_ALARM, alarm_key(member_id, alarm), []);
        Some(AlarmMember { member_id, alarm })
    }

    /// Clears an alarm (recorded in `batch`); `None` when it was not active.
    pub fn deactivate(
        &self,
        member_id: u64,
        alarm: i32,
        batch: &mut BackendBatch,
    ) -> Option<AlarmMember> {
        if !self.active.write().remove(&(member_id, alarm)) {
            return None;
        }
        batch.delete_cf(CF_ALARM, alarm_key(member_id, alarm));
        Some(AlarmMember { member_id, alarm })
    }
}

/// An alarm as etcd prints it in `Status.errors` (gogoproto's compact text).
pub fn describe(alarm: &AlarmMember) -> String {
    let name = AlarmType::try_from(alarm.alarm)
        .map(|a| a.as_str_name().to_string())
        .unwrap_or_else(|_| alarm.alarm.to_string());
    format!("memberID:{} alarm:{} ", alarm.member_id, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_survive_a_reload_and_cap_on_nospace() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let alarms = Alarms::load(&backend).unwrap();
        assert!(!alarms.no_space());
        let mut batch = BackendBatch::new();
        let nospace = AlarmType::Nospace as i32;
        assert!(alarms.activate(7, nospace, &mut batch).is_some());
        assert!(alarms.activate(7, nospace, &mut batch).is_none());
        backend.write(batch).unwrap();
        let reloaded = Alarms::load(&backend).unwrap();
        assert!(reloaded.no_space());
        assert_eq!(
            reloaded.list(AlarmType::None as i32),
            vec![AlarmMember {
                member_id: 7,
                alarm: nospace
            }]
        );
        assert_eq!(
            describe(&reloaded.list(nospace)[0]),
            "memberID:7 alarm:NOSPACE "
        );
        let mut batch = BackendBatch::new();
        assert!(reloaded.deactivate(7, nospace, &mut batch).is_some());
        backend.write(batch).unwrap();
        assert!(!Alarms::load(&backend).unwrap().no_space());
    }
}
