//! The ractor actor: decodes messages and supervision events, drives `State`.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::Instrument;

use super::msg::SupervisorMsg;
use super::state::State;
use crate::config::SupervisorArgs;
use crate::error::SupervisorError;
use crate::exit::ExitReason;

/// The supervisor actor. Stateless; everything lives in `State`.
pub(crate) struct SupervisorActor;

impl SupervisorActor {
    /// Escalation: stop the children in order, then fail so the parent sees the error.
    async fn escalate(state: &mut State, err: SupervisorError) -> ActorProcessingErr {
        tracing::error!(supervisor = %state.name(), error = %err, "supervisor failing");
        state.stop_all().await;
        Box::new(err)
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<State, ActorProcessingErr> {
        let mut state = State::new(args.name, args.config);
        state
            .start_initial(&myself.get_cell(), args.children)
            .await?;
        tracing::info!(supervisor = %state.name(), "supervisor started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match msg {
            SupervisorMsg::AddChild(spec, reply) => {
                let _ = reply.send(state.add(&myself.get_cell(), spec).await);
                Ok(())
            }
            SupervisorMsg::RemoveChild(id, reply) => {
                let _ = reply.send(state.remove(&id).await);
                Ok(())
            }
            SupervisorMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
                Ok(())
            }
            SupervisorMsg::Child(id, reply) => {
                let _ = reply.send(state.child(&id).map(|s| (s.kind, s.slot.clone())));
                Ok(())
            }
            SupervisorMsg::RestartDue(token) => {
                let span = tracing::info_span!("netrun.supervisor", supervisor = %state.name());
                state.on_restart_due(&myself, token).instrument(span).await
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(err) => Err(Self::escalate(state, err).await),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Exits, restarts and escalations become events of this span (ractor's own actor
        // spans are not exported), so they reach the trace collector.
        let span = tracing::info_span!("netrun.supervisor", supervisor = %state.name());
        self.on_event(myself, event, state).instrument(span).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        tracing::info!(supervisor = %state.name(), "supervisor stopped");
        Ok(())
    }
}

impl SupervisorActor {
    async fn on_event(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let exit = ExitReason::from_stop_reason(reason.as_deref());
                state.on_exit(&myself, cell.get_id(), exit).await
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let exit = ExitReason::from_failure(&err);
                state.on_exit(&myself, cell.get_id(), exit).await
            }
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(err) => Err(Self::escalate(state, err).await),
        }
    }
}
