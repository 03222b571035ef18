//! The channelz service (`grpc.channelz.v1.Channelz`, gRFC A14) for our server:
//! what this process's channels, subchannels, sockets and servers have done, read
//! from [`lb_core::channelz::registry`], for tools such as grpcdebug or grpcio's
//! channelz stubs.
//!
//! ```text
//!  GetTopChannels(start, max) ─> registry().list(TopChannel) ─> Channel[] + end
//!  GetServers(start, max)     ─> registry().list(Server)     ─> Server[] + end
//!  GetServerSockets(id, start, max) ─> the server's connection ids ─> SocketRef[] + end
//!  GetServer / GetChannel / GetSubchannel / GetSocket(id) ─> one, or NOT_FOUND
//! ```
//!
//! - Paging as channelz defines it: items with ids from `start_*_id` on, in id
//!   order, at most `max_results` of them (0: [`DEFAULT_PAGE`]; never more than the
//!   service's [`ChannelzService::max_page`]), and `end` when none is left. A client
//!   asks for the next page from the last id it saw plus one.
//! - An id that names nothing, or an entity of another kind (a subchannel id given
//!   to `GetChannel`), is NOT_FOUND. Negative ids or counts are INVALID_ARGUMENT,
//!   and so are request bytes that are not protobuf.
//! - Handlers only read: a snapshot copies an entity's atomics and its trace under
//!   the trace's short lock. Channels and subchannels come from whoever registers
//!   them (lb-core's channel); sockets and servers from this crate
//!   (`driver::channelz`, [`Server::channelz_id`](super::Server::channelz_id)).
//!
//! The messages are coded by hand in [`wire`] on [`lb_core::protowire`].
//!
//! # Examples
//!
//! ```
//! use lb_transport::server::Server;
//! use lb_transport::server::channelz::{ChannelzService, wire::{self, Method, Request}};
//!
//! let server = ChannelzService::new().mount(Server::builder()).bind("127.0.0.1:0")?;
//! // Answered without the network, as a call would be:
//! let request = wire::encode_request(&Request::Server { server_id: server.channelz_id() as i64 });
//! let response = ChannelzService::new().answer(Method::GetServer, &request).unwrap();
//! let found = wire::decode_get_one(&response, wire::decode_server)?.unwrap();
//! assert_eq!(found.id, server.channelz_id());
//! assert_eq!(found.listen_sockets, [server.channelz_listen_socket_id()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod wire;

use lb_core::channelz::{self, Kind, Snapshot};
use lb_core::{Code, Status};

use self::wire::{Method, Request};
use super::{Response, ServerBuilder};

/// Items in a page when the request leaves `max_results` at 0.
pub const DEFAULT_PAGE: usize = 100;

/// The channelz service. Cloning is cheap; it holds only its page limit.
#[derive(Clone, Debug)]
pub struct ChannelzService {
    max_page: usize,
}

impl Default for ChannelzService {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelzService {
    /// The service with pages of at most [`DEFAULT_PAGE`] items.
    pub fn new() -> Self {
        Self {
            max_page: DEFAULT_PAGE,
        }
    }

    /// Pages hold at most `n` items (at least 1), whatever the request asks.
    pub fn max_page(mut self, n: usize) -> Self {
        self.max_page = n.max(1);
        self
    }

    /// Registers the seven methods on `builder`.
    pub fn mount(&self, builder: ServerBuilder) -> ServerBuilder {
        Method::ALL.into_iter().fold(builder, |builder, method| {
            let service = self.clone();
            builder.unary(method.path(), move |request| {
                service.answer(method, &request.message).map(Response::new)
            })
        })
    }

    /// Answers one request of `method`: the encoded response, or the status the
    /// call fails with.
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT for bytes that are not the request or negative numbers;
    /// NOT_FOUND for an id that names no entity of the kind asked for.
    pub fn answer(&self, method: Method, request: &[u8]) -> Result<Vec<u8>, Status> {
        let request = wire::decode_request(method, request).map_err(|e| {
            Status::invalid_argument(format!("bad {} request: {e}", method_name(method)))
        })?;
        let registry = channelz::registry();
        match request {
            Request::TopChannels {
                start_channel_id,
                max_results,
            } => {
                let (start, max) = self.page(start_channel_id, max_results)?;
                let (items, end) = registry.list(Kind::TopChannel, start, max);
                let channels: Vec<_> = items
                    .into_iter()
                    .filter_map(|s| match s {
                        Snapshot::Channel(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                Ok(wire::encode_get_top_channels(&channels, end))
            }
            Request::Servers {
                start_server_id,
                max_results,
            } => {
                let (start, max) = self.page(start_server_id, max_results)?;
                let (items, end) = registry.list(Kind::Server, start, max);
                let servers: Vec<_> = items
                    .into_iter()
                    .filter_map(|s| match s {
                        Snapshot::Server(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                Ok(wire::encode_get_servers(&servers, end))
            }
            Request::Server { server_id } => match get(server_id, &[Kind::Server])? {
                Snapshot::Server(s) => Ok(wire::encode_get_one(&wire::encode_server(&s))),
                _ => Err(not_found("server", server_id)),
            },
            Request::ServerSockets {
                server_id,
                start_socket_id,
                max_results,
            } => {
                let Snapshot::Server(server) = get(server_id, &[Kind::Server])? else {
                    return Err(not_found("server", server_id));
                };
                let (start, max) = self.page(start_socket_id, max_results)?;
                let (refs, end) = socket_page(server.sockets, start, max);
                Ok(wire::encode_get_server_sockets(&refs, end))
            }
            Request::Channel { channel_id } => {
                match get(channel_id, &[Kind::TopChannel, Kind::NestedChannel])? {
                    Snapshot::Channel(c) => Ok(wire::encode_get_one(&wire::encode_channel(&c))),
                    _ => Err(not_found("channel", channel_id)),
                }
            }
            Request::Subchannel { subchannel_id } => {
                match get(subchannel_id, &[Kind::Subchannel])? {
                    Snapshot::Subchannel(s) => {
                        Ok(wire::encode_get_one(&wire::encode_subchannel(&s)))
                    }
                    _ => Err(not_found("subchannel", subchannel_id)),
                }
            }
            Request::Socket { socket_id, .. } => {
                match get(socket_id, &[Kind::Socket, Kind::ListenSocket])? {
                    Snapshot::Socket(s) => Ok(wire::encode_get_one(&wire::encode_socket(&s))),
                    _ => Err(not_found("socket", socket_id)),
                }
            }
        }
    }

    /// The first id and the page size of a paged request.
    fn page(&self, start: i64, max_results: i64) -> Result<(u64, usize), Status> {
        let start = u64::try_from(start)
            .map_err(|_| Status::invalid_argument(format!("negative start id {start}")))?;
        let max = usize::try_from(max_results)
            .map_err(|_| Status::invalid_argument(format!("negative max_results {max_results}")))?;
        let max = if max == 0 { DEFAULT_PAGE } else { max };
        Ok((start, max.min(self.max_page)))
    }
}

fn method_name(method: Method) -> &'static str {
    method.path().rsplit('/').next().unwrap_or_default()
}

fn not_found(what: &str, id: i64) -> Status {
    Status::new(Code::NotFound, format!("no {what} with id {id}"))
}

/// The entity `id` if it is registered, alive and one of `kinds`.
fn get(id: i64, kinds: &[Kind]) -> Result<Snapshot, Status> {
    let registry = channelz::registry();
    let what = match kinds[0] {
        Kind::Server => "server",
        Kind::Subchannel => "subchannel",
        Kind::Socket | Kind::ListenSocket => "socket",
        Kind::TopChannel | Kind::NestedChannel => "channel",
    };
    u64::try_from(id)
        .ok()
        .filter(|&id| registry.kind(id).is_some_and(|k| kinds.contains(&k)))
        .and_then(|id| registry.get(id))
        .ok_or_else(|| not_found(what, id))
}

/// Up to `max` of a server's live connection sockets with ids from `start` on (id
/// and name), and whether they were the last.
fn socket_page(mut ids: Vec<u64>, start: u64, max: usize) -> (Vec<(u64, String)>, bool) {
    ids.sort_unstable();
    ids.retain(|&id| id >= start);
    let mut out = Vec::new();
    let mut taken = 0;
    for &id in &ids {
        if out.len() == max {
            break;
        }
        taken += 1;
        // A connection that closed since the snapshot is left out.
        if let Some(Snapshot::Socket(s)) = channelz::registry().get(id) {
            out.push((id, s.name));
        }
    }
    (out, taken == ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Server;

    fn code(result: Result<Vec<u8>, Status>) -> Code {
        result.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    #[test]
    fn unknown_ids_and_wrong_kinds_are_not_found() {
        let server = Server::builder().bind("127.0.0.1:0").unwrap();
        let service = ChannelzService::new();
        let listen = server.channelz_listen_socket_id() as i64;
        let id = server.channelz_id() as i64;
        let ask = |method, request: Request| {
            code(service.answer(method, &wire::encode_request(&request)))
        };
        assert_eq!(
            ask(Method::GetServer, Request::Server { server_id: id }),
            Code::Ok
        );
        assert_eq!(
            ask(Method::GetServer, Request::Server { server_id: listen }),
            Code::NotFound
        );
        assert_eq!(
            ask(Method::GetChannel, Request::Channel { channel_id: id }),
            Code::NotFound
        );
        assert_eq!(
            ask(
                Method::GetSubchannel,
                Request::Subchannel {
                    subchannel_id: i64::MAX
                }
            ),
            Code::NotFound
        );
        assert_eq!(
            ask(
                Method::GetSocket,
                Request::Socket {
                    socket_id: listen,
                    summary: false
                }
            ),
            Code::Ok
        );
        assert_eq!(
            ask(
                Method::GetSocket,
                Request::Socket {
                    socket_id: 0,
                    summary: false
                }
            ),
            Code::NotFound
        );
        assert_eq!(
            ask(
                Method::GetServers,
                Request::Servers {
                    start_server_id: 0,
                    max_results: -1
                }
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(service.answer(Method::GetServers, &[0x08])),
            Code::InvalidArgument
        );
        drop(server);
        assert_eq!(
            ask(Method::GetServer, Request::Server { server_id: id }),
            Code::NotFound
        );
    }

    #[test]
    fn servers_page_by_id() {
        let servers: Vec<Server> = (0..3)
            .map(|_| Server::builder().workers(1).bind("127.0.0.1:0").unwrap())
            .collect();
        let ids: Vec<u64> = servers.iter().map(Server::channelz_id).collect();
        let service = ChannelzService::new().max_page(2);
        let page = |start: u64, max: i64| {
            let request = Request::Servers {
                start_server_id: start as i64,
                max_results: max,
            };
            let bytes = service
                .answer(Method::GetServers, &wire::encode_request(&request))
                .unwrap();
            let (servers, end) = wire::decode_page(&bytes, wire::decode_server).unwrap();
            (servers.iter().map(|s| s.id).collect::<Vec<_>>(), end)
        };
        // Other tests' servers may sit between ours; ours come in id order.
        let (first, end) = page(ids[0], 1);
        assert_eq!((first, end), (vec![ids[0]], false));
        let (next, _) = page(ids[0] + 1, 0);
        assert_eq!(next.len(), 2, "max_page caps the default page");
        assert!(next[0] > ids[0] && next[0] <= ids[1], "{next:?} {ids:?}");
        let (last, _) = page(ids[2], 100);
        assert_eq!(last.first(), Some(&ids[2]));
    }
}
