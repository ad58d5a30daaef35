//! Bringing a member up from its data dir: the backend and key space, who the member is
//! (the ids it stored, or worked out from `--initial-cluster` for a new cluster and from
//! the running members for an existing one), and the state rebuilt from the backend
//! (membership, leases, alarms).

use std::sync::Arc;

use cairn_lease_manager::{Lessor, SystemClock};
use cairn_mvcc_store::backend::{CF_MEMBERS as MEMBERS_CF, MEMBER_ID_KEY};
use cairn_mvcc_store::{Backend, BackendBatch, KvStore};
use cairn_proto::etcdserverpb as pb;
use cairn_raft_node::{InitialMember, PeerUrls};

use crate::alarms::Alarms;
use crate::config::{Config, ConfigError};
use crate::error::ServerError;
use crate::members::{self, Membership, CLUSTER_ID_KEY};
use crate::{ids, join};

/// Who this member is and, for a member without a log yet, the log's initial members.
pub(crate) struct Identity {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) initial: Vec<InitialMember>,
    /// The members a joining member learnt of (its log will tell it again).
    pub(crate) known: Vec<pb::Member>,
}

/// What a member holds on its disk, opened and rebuilt.
pub(crate) struct LocalState {
    pub(crate) backend: Arc<Backend>,
    pub(crate) store: Arc<KvStore>,
    pub(crate) identity: Identity,
    pub(crate) membership: Arc<Membership>,
    /// Where the other members are; follows the membership.
    pub(crate) peer_urls: PeerUrls,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) auth: Arc<cairn_auth::Auth>,
}

impl LocalState {
    /// Opens the data dir of `cfg` (creating it for a new member); leases shorter than
    /// `min_lease_ttl` seconds are granted that long.
    pub(crate) async fn open(cfg: &Config, min_lease_ttl: i64) -> Result<Self, ServerError> {
        let data_dir = cfg.data_dir();
        std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let backend = Backend::open(cfg.db_dir())?;
        let store = Arc::new(KvStore::open(backend.clone())?);
        let identity = identity(cfg, &backend).await?;
        let peer_urls = PeerUrls::default();
        for m in identity.known.iter().filter(|m| m.id != identity.member_id) {
            peer_urls.set(m.id, m.peer_ur_ls.clone());
        }
        let membership = Membership::load(&backend, identity.member_id, peer_urls.clone())?;
        let lessor = Arc::new(Lessor::new(min_lease_ttl, Arc::new(SystemClock)));
        lessor.recover(store.as_ref())?;
        let alarms = Arc::new(Alarms::load(&backend)?);
        let auth = crate::auth_state::open(cfg, &backend)?;
        Ok(LocalState {
            backend,
            store,
            identity,
            membership,
            peer_urls,
            lessor,
            alarms,
            auth,
        })
    }
}

fn read_local(backend: &Backend, key: &[u8]) -> Result<Option<u64>, ServerError> {
    let value = backend.get(MEMBERS_CF, key)?;
    Ok(value
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes))
}

/// Reads this member's ids from its data dir, or works them out for a new member: from
/// `--initial-cluster` for a new cluster, from the running members for an existing one.
async fn identity(cfg: &Config, backend: &Backend) -> Result<Identity, ServerError> {
    let stored = (
        read_local(backend, CLUSTER_ID_KEY)?,
        read_local(backend, MEMBER_ID_KEY)?,
    );
    if let (Some(cluster_id), Some(member_id)) = stored {
        if cairn_raft_node::LogStore::exists(&cfg.wal_dir()) {
            tracing::info!(member_id = %format!("{member_id:x}"), "restarting member from its data dir; --initial-cluster flags are ignored");
            return Ok(Identity {
                cluster_id,
                member_id,
                initial: Vec::new(),
                known: Vec::new(),
            });
        }
    }
    let members = cfg.initial_members()?;
    let token = &cfg.initial_cluster_token;
    let identity = match cfg.initial_cluster_state.as_str() {
        "new" => {
            let ids: Vec<u64> = members
                .iter()
                .map(|m| ids::member_id(&m.peer_urls, token))
                .collect();
            let initial = members
                .iter()
                .zip(&ids)
                .map(|(m, id)| InitialMember {
                    id: *id,
                    context: members::change_context(&pb::Member {
                        id: *id,
                        name: m.name.clone(),
                        peer_ur_ls: m.peer_urls.clone(),
                        client_ur_ls: Vec::new(),
                        is_learner: false,
                    }),
                })
                .collect();
            Identity {
                cluster_id: ids::cluster_id(&ids),
                member_id: ids::member_id(&cfg.advertise_peer_urls(), token),
                initial,
                known: Vec::new(),
            }
        }
        "existing" => {
            let tls = crate::peer_tls::client_config(cfg)?;
            let joined = join::existing_cluster(cfg, &members, tls.as_ref()).await?;
            Identity {
                cluster_id: joined.cluster_id,
                member_id: joined.member_id,
                initial: Vec::new(),
                known: joined.members,
            }
        }
        other => {
            return Err(ServerError::Config(ConfigError::Invalid(format!(
                "unexpected --initial-cluster-state {other:?} (want \"new\" or \"existing\")"
            ))))
        }
    };
    let mut batch = BackendBatch::default();
    batch.put_cf(
        MEMBERS_CF,
        CLUSTER_ID_KEY,
        identity.cluster_id.to_be_bytes(),
    );
    batch.put_cf(MEMBERS_CF, MEMBER_ID_KEY, identity.member_id.to_be_bytes());
    backend.write(batch)?;
    backend.sync()?;
    Ok(identity)
}
