//! Admin: the node's HTTP introspection endpoint. A child of `NodeSupervisor`.
//!
//! The actor owns the HTTP server task (routes in [`crate::admin`]) and stops it when it stops;
//! it takes no messages.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::admin::AdminContext;

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
    pub context: AdminContext,
}

/// The admin actor's state.
#[derive(Debug)]
pub struct State {
    server: JoinHandle<()>,
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
        let router = crate::admin::router(args.context);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(args.listener, router).await {
                tracing::error!(error = %e, "admin endpoint stopped");
            }
        });
        Ok(State { server })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state.server.abort();
        Ok(())
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
