//! Ticket state moves as SQL: the domain decides which moves are allowed and what a ticket says
//! after one (`TicketState::entered_from`, `TicketState::message`); this module only turns that into
//! bind parameters, so no state name or message is written in a SQL string.

use satchel_domain::model::{TicketKind, TicketState};
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

/// The SQL pieces of one move to `to`, with placeholders numbered from the `first` given to
/// [`Move::to`]: `set` goes in the UPDATE's SET list (the new state and, if the domain has one, each
/// kind's message), `guard` in its WHERE (the states the move is allowed from). [`Move::bind`] binds
/// their values after the statement's own parameters.
pub(crate) struct Move {
    pub set: String,
    pub guard: String,
    binds: Vec<&'static str>,
}

impl Move {
    pub fn to(to: TicketState, first: usize) -> Move {
        let mut binds = vec![to.as_str()];
        let mut set = format!("state = ${first}");
        if TicketKind::ALL.iter().all(|k| to.message(*k).is_some()) {
            // One statement for every kind: the row's own kind picks its message.
            set.push_str(", message = CASE kind");
            for kind in TicketKind::ALL {
                let n = first + binds.len();
                set.push_str(&format!(" WHEN ${n} THEN ${}", n + 1));
                binds.push(kind.as_str());
                binds.push(to.message(kind).unwrap_or_default());
            }
            set.push_str(" END");
        }
        let guard = in_states(to.entered_from(), first + binds.len());
        binds.extend(to.entered_from().iter().map(|s| s.as_str()));
        Move { set, guard, binds }
    }

    /// Binds the move's values to `q`, whose own parameters are bound already.
    pub fn bind<'q, DB>(
        &self,
        q: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
    where
        DB: Database,
        &'q str: Encode<'q, DB> + Type<DB>,
    {
        self.binds
            .iter()
            .fold(q, |q, b: &&'static str| q.bind::<&'q str>(b))
    }
}

/// The states of a ticket whose job is still working on it: every state that is not final, but an
/// import's wait for its upload (it has no job yet).
pub(crate) const UNFINISHED: [TicketState; 2] = [TicketState::Queued, TicketState::Running];

/// `state IN ($first, ...)` for `states` (bound by the caller in that order).
pub(crate) fn in_states(states: &[TicketState], first: usize) -> String {
    let list: Vec<String> = (first..first + states.len())
        .map(|n| format!("${n}"))
        .collect();
    format!("state IN ({})", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_are_the_states_that_are_not_final() {
        let all = [
            TicketState::AwaitingUpload,
            TicketState::Queued,
            TicketState::Running,
            TicketState::Complete,
            TicketState::Error,
            TicketState::Cancelled,
            TicketState::Expired,
        ];
        let unfinished: Vec<_> = all
            .into_iter()
            .filter(|s| !s.is_final() && *s != TicketState::AwaitingUpload)
            .collect();
        assert_eq!(unfinished, UNFINISHED);
    }

    #[test]
    fn a_move_binds_its_state_messages_and_sources_in_placeholder_order() {
        let m = Move::to(TicketState::Running, 3);
        assert_eq!(
            m.set,
            "state = $3, message = CASE kind WHEN $4 THEN $5 WHEN $6 THEN $7 WHEN $8 THEN $9 \
             WHEN $10 THEN $11 WHEN $12 THEN $13 WHEN $14 THEN $15 WHEN $16 THEN $17 END"
        );
        assert_eq!(m.guard, "state IN ($18, $19)");
        assert_eq!(
            m.binds,
            [
                "running",
                "bundle_export",
                "export in progress",
                "container_image",
                "generation in progress",
                "appliance_export",
                "export in progress",
                "bundle_import",
                "import in progress",
                "template_import",
                "import in progress",
                "takeout",
                "takeout in progress",
                "image_publish",
                "publication in progress",
                "queued",
                "running"
            ]
        );
        // Error's message says what failed: the caller sets it.
        let m = Move::to(TicketState::Error, 5);
        assert_eq!(m.set, "state = $5");
        assert_eq!(m.guard, "state IN ($6, $7)");
    }
}
