//! Admin: the node's HTTP introspection endpoint. A child of `NodeSupervisor`, restarted by it
//! on failure (serving the same listener again).
//!
//! The actor owns the HTTP server task (the application is [`crate::admin`]) and stops it when
//! it stops, or fails; it takes no messages.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::AbortOnDrop;
use crate::admin::{CAPS, Context, routes};

/// The admin actor.
#[derive(Debug, Default)]
pub struct Admin;

/// Admin takes no messages: it exists to own the server task in the supervision tree.
#[derive(Debug)]
pub enum Msg {}

impl ractor::Message for Msg {}

/// Start-up arguments: the bound listener and what the routes read.
#[derive(Debug)]
pub struct Arguments {
    /// The admin listener, bound before any actor started.
    pub listener: tokio::net::TcpListener,
    /// What the routes need.
    pub context: Context,
}

/// The admin actor's state: the server task, aborted when the state is dropped (a failed or
/// killed actor skips `post_stop`, and its listener must not keep a second server alive).
#[derive(Debug)]
pub struct State {
    _server: AbortOnDrop,
}

impl Actor for Admin {
    type Msg = Msg;
    type State = State;
    type Arguments = Arguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        args: Arguments,
    ) -> Result<State, ActorProcessingErr> {
        let router = routes::router(args.context);
        // The HTTP door's server loop: the same bounds on slow heads, stalled writes and
        // connections (the dashboard brings browsers to this listener).
        let server = tokio::spawn(crate::api::listener::serve(
            args.listener,
            router,
            CAPS,
            None,
        ));
        Ok(State {
            _server: AbortOnDrop(server),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        _state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
