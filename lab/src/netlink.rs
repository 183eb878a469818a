//! Links, addresses, routes and rules through rtnetlink, in a chosen network namespace. A
//! netlink socket acts in the namespace of the thread that opened it, so each [`Netlink`] is
//! opened on a thread that entered the namespace, then used from async code anywhere.

use std::{net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        link::{InfoData, InfoVeth},
        route::{RouteMessage, RouteScope, RouteType},
    },
};

pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink connection inside the namespace at `ns`. Needs a tokio runtime.
    pub fn open_in(ns: &Path) -> Result<Self> {
        // The socket is registered with the runtime's reactor, so the thread enters it too.
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = netns::run_in(ns, move || {
            let _guard = rt.enter();
            rtnetlink::new_connection()
        })?
        .context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let link = links
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("no interface {name}"))?;
        Ok(link.header.index)
    }

    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_name(name).up().build())
            .execute()
            .await
            .with_context(|| format!("setting {name} up"))
    }

    /// Creates a veth pair: `local` in this namespace, `peer` created directly inside the
    /// namespace at `peer_ns` (so it never appears anywhere else).
    pub async fn add_veth(&self, local: &str, peer: &str, peer_ns: &Path) -> Result<()> {
        let ns = std::fs::File::open(peer_ns)
            .with_context(|| format!("opening {}", peer_ns.display()))?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(local, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating veth {local} <-> {peer}"))
    }

    pub async fn add_addr(&self, ifname: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let index = self.index(ifname).await?;
        self.handle
            .address()
            .add(index, ip.into(), prefix)
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding {ip}/{prefix} to {ifname}"))
    }

    /// Adds (or replaces) one route; `what` describes it for the error.
    async fn add_route(&self, msg: RouteMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(what)
    }

    /// `ip route add DST/PREFIX dev IFNAME scope link`
    pub async fn add_link_route(&self, dst: Ipv4Addr, prefix: u8, ifname: &str) -> Result<()> {
        let index = self.index(ifname).await?;
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        self.add_route(msg, || format!("adding route {dst}/{prefix} dev {ifname}"))
            .await
    }

    /// `ip route add default via GW dev IFNAME`
    pub async fn add_default_route(&self, gw: Ipv4Addr, ifname: &str) -> Result<()> {
        let index = self.index(ifname).await?;
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        self.add_route(msg, || format!("adding default route via {gw}"))
            .await
    }

    /// `ip route add local 0.0.0.0/0 dev lo table TABLE`: delivers everything locally.
    pub async fn add_local_default_route(&self, table: u32) -> Result<()> {
        let index = self.index("lo").await?;
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(index)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .table_id(table)
            .build();
        self.add_route(msg, || {
            format!("adding local default route in table {table}")
        })
        .await
    }

    /// `ip rule add fwmark MARK/MASK lookup TABLE pref PRIORITY`
    pub async fn add_fwmark_rule(
        &self,
        mark: u32,
        mask: u32,
        table: u32,
        priority: u32,
    ) -> Result<()> {
        let mut req = self
            .handle
            .rule()
            .add()
            .v4()
            .fw_mark(mark)
            .table_id(table)
            .priority(priority)
            .action(rtnetlink::packet_route::rule::RuleAction::ToTable);
        req.message_mut()
            .attributes
            .push(rtnetlink::packet_route::rule::RuleAttribute::FwMask(mask));
        req.execute()
            .await
            .with_context(|| format!("adding rule fwmark {mark:#x}/{mask:#x} lookup {table}"))
    }
}
