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

/// `state IN ($first, ...)` for `states` (bound by the caller in that order).
pub(crate) fn in_states(states: &[TicketState], first: usize) -> String {
    let list: Vec<String> = (first..first + states.len())
        .map(|n| format!("${n}"))
        .collect();
    format!("state IN ({})", list.join(", "))
}
