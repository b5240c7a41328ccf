//! What the backend direction expects from the server, in the order the client sent it.
//!
//! Why a module of its own: pairing the server's answers with the client's messages is the
//! part of the relay that decides which statement an error, a row or a completion belongs to,
//! and which statements the server skipped. Getting it wrong misattributes outcomes in the
//! audit record or masks a result with another statement's plan. So that state machine lives
//! here, apart from every socket: [`ExpectQueue`] does no I/O and is tested on its own; the
//! backend direction only frames messages and calls it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gatehouse_core::audit::Outcome;
use gatehouse_core::masking::MaskCounts;
use gatehouse_core::session::{ResultCapture, StatementEnd};

use crate::mask::copy::{CopyPlan, CopySpec};
use crate::mask::{LineageMask, ResultPlan};

/// A statement in flight, from its write-ahead record to its outcome.
#[derive(Debug)]
pub(super) struct Stmt {
    pub(super) seq: Option<u64>,
    pub(super) started: Instant,
    /// The gateway's error to show instead of the server's (the statement was refused).
    pub(super) replace_error: Option<Bytes>,
    pub(super) refused_outcome: Option<Outcome>,
    pub(super) rows: u64,
    pub(super) result_rows: u64,
    pub(super) end: StatementEnd,
    pub(super) results: Option<ResultCapture>,
    pub(super) result_bytes: u64,
    /// Result format codes from the Bind (empty: all text, as in the simple protocol).
    pub(super) result_formats: Arc<[i16]>,
    /// Column names from a RowDescription seen while this statement was current.
    pub(super) columns: Vec<String>,
    /// Masking: what the statement's lineage says, the plan of the result set being sent,
    /// the COPY being sent, and the values masked so far.
    pub(super) masking: StmtMasking,
    pub(super) plan: Option<ResultPlan>,
    pub(super) copy: Option<CopyPlan>,
    pub(super) masked: MaskCounts,
}

/// What the frontend learnt about a statement's results, for the backend to mask them.
#[derive(Debug, Clone, Default)]
pub(super) struct StmtMasking {
    pub(super) lineage: Option<Arc<LineageMask>>,
    pub(super) copy: Option<Arc<CopySpec>>,
    /// The statement reads or writes masked data: the server's error and notice texts are
    /// withheld (they may quote a masked value in any shape).
    pub(super) withhold_text: bool,
}

impl Stmt {
    pub(super) fn new(seq: Option<u64>) -> Self {
        Self {
            seq,
            started: Instant::now(),
            replace_error: None,
            refused_outcome: None,
            rows: 0,
            result_rows: 0,
            end: StatementEnd::Completed,
            results: None,
            result_bytes: 0,
            result_formats: Arc::from([]),
            columns: Vec::new(),
            masking: StmtMasking::default(),
            plan: None,
            copy: None,
            masked: MaskCounts::default(),
        }
    }

    /// Moves the counts of the finished result set (or COPY) into the statement's totals.
    pub(super) fn close_result(&mut self) {
        if let Some(mut p) = self.plan.take() {
            p.drain_counts(&mut self.masked);
        }
        if let Some(mut c) = self.copy.take() {
            c.drain_counts(&mut self.masked);
        }
    }
}

/// Whether result column `i` arrives in binary format under a Bind's result format codes
/// (none: all text; one: all columns; else one per column).
pub(super) fn binary_format(formats: &[i16], i: usize) -> bool {
    match formats.len() {
        0 => false,
        1 => formats.first() == Some(&1),
        _ => formats.get(i) == Some(&1),
    }
}

/// What the backend direction should expect, in the order the client sent it.
#[derive(Debug)]
pub(super) enum Expect {
    /// A simple Query (or FunctionCall): completes at the next ReadyForQuery.
    Query(Stmt),
    /// An extended-protocol Execute: completes at CommandComplete, EmptyQueryResponse,
    /// PortalSuspended or ErrorResponse — or is skipped after an earlier error.
    Execute(Stmt),
    /// A Parse, Bind, Close or Describe: completes at its own response (ParseComplete,
    /// BindComplete, CloseComplete, RowDescription/NoData). With an error, the message was
    /// refused and replaced: the server's ErrorResponse is swapped for this one.
    Ext(ExtKind, Option<Bytes>),
    /// A Sync: completes at ReadyForQuery.
    Sync,
    /// Write this to the client, then end the session.
    Fatal(Bytes),
    /// Write this to the client at once, between messages (a NoticeResponse about a held
    /// statement); it answers nothing.
    Notice(Bytes),
}

/// Extended-protocol messages that answer with a completion of their own. Tracking them
/// keeps the queue exact: an ErrorResponse is always attributed to the message the server
/// was processing, and after one, everything up to Sync is known to be discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExtKind {
    Parse,
    Bind,
    Close,
    Describe,
    /// The gateway's own Describe of the portal an Execute runs: its RowDescription (or
    /// NoData) gives the result's columns and formats, and is not forwarded.
    MaskDescribe,
}

/// The expectations not yet answered, in the client's order, and what has been settled:
/// statements finished (waiting for their outcome record) and notices to pass on.
///
/// The server answers messages strictly in order, so the head of the queue is always the
/// message the server is processing; each method below is one kind of answer.
#[derive(Debug, Default)]
pub(super) struct ExpectQueue {
    queue: VecDeque<Expect>,
    /// After an extended-protocol error the server discards everything up to Sync; set while
    /// that Sync has not been queued yet.
    skipping: bool,
    /// Statements finished and waiting for their outcome record.
    done: Vec<Stmt>,
    /// Notices drained with other expectations, written before the next chunk.
    notices: Vec<Bytes>,
}

impl ExpectQueue {
    /// Queues what the client sent, unless the server is discarding it (skip-to-Sync). A
    /// `Fatal` goes to the front (it is written before anything else); a `Notice` answers
    /// nothing and is only buffered.
    pub(super) fn push(&mut self, e: Expect) {
        match e {
            Expect::Fatal(_) => self.queue.push_front(e),
            Expect::Notice(b) => self.notices.push(b),
            Expect::Sync => {
                self.skipping = false;
                self.queue.push_back(e);
            }
            Expect::Query(st) | Expect::Execute(st) if self.skipping => self.skip(st),
            Expect::Ext(..) if self.skipping => {}
            e => self.queue.push_back(e),
        }
    }

    fn skip(&mut self, mut st: Stmt) {
        st.end.set(StatementEnd::Skipped);
        self.done.push(st);
    }

    /// Nothing is expected any more.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The error to write to the client before ending the session, when one is at the head.
    pub(super) fn fatal(&self) -> Option<&Bytes> {
        match self.queue.front() {
            Some(Expect::Fatal(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The statement whose results are arriving: the head of the queue when it is a Query or
    /// an Execute.
    pub(super) fn current(&mut self) -> Option<&mut Stmt> {
        match self.queue.front_mut() {
            Some(Expect::Query(s)) | Some(Expect::Execute(s)) => Some(s),
            _ => None,
        }
    }

    /// The Execute at the head (after a Describe of its portal was answered).
    pub(super) fn execute(&mut self) -> Option<&mut Stmt> {
        match self.queue.front_mut() {
            Some(Expect::Execute(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether a simple Query is at the head.
    pub(super) fn query_at_head(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Query(_)))
    }

    /// Whether an extended-protocol message of `kind` is at the head.
    pub(super) fn ext_at_head(&self, kind: ExtKind) -> bool {
        matches!(self.queue.front(), Some(Expect::Ext(k, _)) if *k == kind)
    }

    /// A RowDescription or NoData: it answers the Describe of `kind` at the head, if that is
    /// what is there. Returns whether it did.
    pub(super) fn described(&mut self, kind: ExtKind) -> bool {
        let answered = self.ext_at_head(kind);
        if answered {
            self.queue.pop_front();
        }
        answered
    }

    /// ParseComplete, BindComplete, CloseComplete: the extended-protocol message at the head
    /// is answered.
    pub(super) fn ext_complete(&mut self) {
        if let Some(Expect::Ext(..)) = self.queue.front() {
            self.queue.pop_front();
        }
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended, with the row count the server
    /// reported (`None`: none, or not a CommandComplete). A Query adds the rows and waits for
    /// ReadyForQuery; an Execute is finished (counting the rows sent when none is reported).
    pub(super) fn command_complete(&mut self, rows: Option<u64>) {
        match self.queue.front_mut() {
            Some(Expect::Query(st)) => st.rows += rows.unwrap_or(0),
            Some(Expect::Execute(st)) => {
                st.rows += rows.unwrap_or(st.result_rows);
                if let Some(Expect::Execute(st)) = self.queue.pop_front() {
                    self.done.push(st);
                }
            }
            _ => {}
        }
    }

    /// An ErrorResponse with `sqlstate`. Returns the gateway's error to send instead of the
    /// server's, when the failing message was one the gateway refused and replaced.
    pub(super) fn error(&mut self, sqlstate: &str) -> Option<Bytes> {
        match self.queue.front_mut() {
            Some(Expect::Query(st)) => {
                let replace = st.replace_error.take();
                if replace.is_none() {
                    st.end.set(StatementEnd::Failed(sqlstate.to_owned()));
                }
                replace
            }
            Some(Expect::Execute(_)) | Some(Expect::Ext(..)) => self.extended_error(sqlstate),
            _ => None,
        }
    }

    /// An error in the extended protocol: the server discards everything up to the next Sync.
    /// The first statement of that run carries the error; the rest never ran.
    fn extended_error(&mut self, sqlstate: &str) -> Option<Bytes> {
        // Only the message the server was processing (the head) can have caused the error,
        // so only its replacement applies.
        let mut replace = None;
        let mut head = true;
        let mut attributed = false;
        loop {
            match self.queue.front() {
                None => {
                    // The Sync has not arrived yet: discard what comes until it does.
                    self.skipping = true;
                    break;
                }
                Some(Expect::Sync) | Some(Expect::Fatal(_)) => break,
                Some(_) => {}
            }
            match self.queue.pop_front() {
                Some(Expect::Execute(mut st)) if !attributed => {
                    attributed = true;
                    if head {
                        replace = st.replace_error.take();
                    }
                    // A refused Parse ahead of it: the statement was blocked, not failed.
                    let code = if replace.is_some() { "42501" } else { sqlstate };
                    st.end.set(StatementEnd::Failed(code.to_owned()));
                    self.done.push(st);
                }
                Some(Expect::Execute(st)) | Some(Expect::Query(st)) => self.skip(st),
                Some(Expect::Ext(_, rep)) if head => replace = rep,
                _ => {}
            }
            head = false;
        }
        replace
    }

    /// A ReadyForQuery: everything up to the Query or Sync it answers is complete. Executes
    /// still waiting before it never ran; a `Fatal` stays at the head.
    pub(super) fn ready_for_query(&mut self) {
        self.skipping = false;
        while let Some(e) = self.queue.pop_front() {
            match e {
                Expect::Execute(st) => self.skip(st),
                Expect::Ext(..) | Expect::Notice(_) => {}
                Expect::Query(st) => {
                    self.done.push(st);
                    break;
                }
                Expect::Sync => break,
                Expect::Fatal(b) => {
                    self.queue.push_front(Expect::Fatal(b));
                    break;
                }
            }
        }
    }

    /// The notices buffered since the last call, in order.
    pub(super) fn take_notices(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.notices)
    }

    /// The statements finished since the last call, in the order they finished.
    pub(super) fn take_done(&mut self) -> Vec<Stmt> {
        std::mem::take(&mut self.done)
    }

    /// Queues what the client sent after the session ended: nothing will answer it, so it is
    /// queued as it is (no skip-to-Sync, no reordering) for [`ExpectQueue::finish`].
    pub(super) fn push_unanswered(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    /// The session ended: every statement still to be recorded, the finished ones first,
    /// then those still in flight (ended by the session) in the client's order. Leaves the
    /// queue empty.
    pub(super) fn finish(&mut self) -> Vec<Stmt> {
        let mut stmts = std::mem::take(&mut self.done);
        for e in self.queue.drain(..) {
            if let Expect::Query(mut st) | Expect::Execute(mut st) = e {
                st.end.set(StatementEnd::SessionEnded);
                stmts.push(st);
            }
        }
        stmts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(seq: u64) -> Stmt {
        Stmt::new(Some(seq))
    }

    fn refused(seq: u64, error: &'static [u8]) -> Stmt {
        let mut st = stmt(seq);
        st.replace_error = Some(Bytes::from_static(error));
        st
    }

    fn ext(kind: ExtKind) -> Expect {
        Expect::Ext(kind, None)
    }

    /// `(seq, end)` of each statement.
    fn ends(stmts: Vec<Stmt>) -> Vec<(Option<u64>, StatementEnd)> {
        stmts.into_iter().map(|st| (st.seq, st.end)).collect()
    }

    /// `(seq, end)` of each statement finished since the last call.
    fn done(q: &mut ExpectQueue) -> Vec<(Option<u64>, StatementEnd)> {
        ends(q.take_done())
    }

    fn failed(code: &str) -> StatementEnd {
        StatementEnd::Failed(code.to_owned())
    }

    #[test]
    fn a_query_completes_at_ready_for_query_not_at_command_complete() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Query(stmt(1)));
        q.command_complete(Some(2));
        q.command_complete(Some(3));
        assert!(done(&mut q).is_empty());
        assert_eq!(q.current().map(|st| st.rows), Some(5));
        q.ready_for_query();
        let stmts = q.take_done();
        assert_eq!(stmts.len(), 1);
        assert_eq!(stmts[0].seq, Some(1));
        assert_eq!(stmts[0].rows, 5);
        assert_eq!(stmts[0].end, StatementEnd::Completed);
        assert!(q.is_empty());
    }

    #[test]
    fn an_execute_completes_at_command_complete() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Parse));
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(7)));
        q.push(Expect::Sync);
        assert!(q.current().is_none(), "a Parse at the head is no statement");
        q.ext_complete();
        q.ext_complete();
        assert!(q.current().is_some());
        q.command_complete(Some(3));
        let stmts = q.take_done();
        assert_eq!(stmts.len(), 1);
        assert_eq!(stmts[0].seq, Some(7));
        assert_eq!(stmts[0].rows, 3);
        assert_eq!(stmts[0].end, StatementEnd::Completed);
        // The Sync is still owed its ReadyForQuery.
        assert!(!q.is_empty());
        q.ready_for_query();
        assert!(q.is_empty());
        assert!(done(&mut q).is_empty());
    }

    /// PortalSuspended or EmptyQueryResponse: no count of their own.
    #[test]
    fn without_a_row_count_an_execute_counts_the_rows_sent_and_a_query_adds_none() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute(stmt(1)));
        q.push(Expect::Query(stmt(2)));
        for _ in 0..2 {
            if let Some(st) = q.current() {
                st.result_rows = 4;
            }
            q.command_complete(None);
        }
        q.ready_for_query();
        let rows: Vec<u64> = q.take_done().iter().map(|st| st.rows).collect();
        assert_eq!(rows, vec![4, 0]);
    }

    #[test]
    fn an_extended_error_fails_the_first_execute_and_skips_the_rest_up_to_sync() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(1)));
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(2)));
        q.push(Expect::Query(stmt(3)));
        q.push(Expect::Sync);
        q.push(Expect::Execute(stmt(4)));
        assert_eq!(q.error("22P02"), None);
        assert_eq!(
            done(&mut q),
            vec![
                (Some(1), failed("22P02")),
                (Some(2), StatementEnd::Skipped),
                (Some(3), StatementEnd::Skipped),
            ]
        );
        // The Sync stopped the discard: what follows it is still expected.
        q.ready_for_query();
        assert!(done(&mut q).is_empty());
        assert_eq!(q.current().map(|st| st.seq), Some(Some(4)));
    }

    #[test]
    fn a_refused_parse_at_the_head_replaces_the_error_and_blocks_the_execute() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Ext(
            ExtKind::Parse,
            Some(Bytes::from_static(b"refused")),
        ));
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(1)));
        q.push(Expect::Sync);
        assert_eq!(q.error("42601"), Some(Bytes::from_static(b"refused")));
        assert_eq!(done(&mut q), vec![(Some(1), failed("42501"))]);
    }

    #[test]
    fn a_refused_parse_behind_the_head_does_not_replace_the_error() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Ext(
            ExtKind::Parse,
            Some(Bytes::from_static(b"refused")),
        ));
        q.push(Expect::Execute(stmt(1)));
        q.push(Expect::Sync);
        assert_eq!(q.error("26000"), None);
        assert_eq!(done(&mut q), vec![(Some(1), failed("26000"))]);
    }

    #[test]
    fn a_refused_execute_replaces_the_error_only_at_the_head() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute(refused(1, b"not recorded")));
        q.push(Expect::Sync);
        assert_eq!(q.error("34000"), Some(Bytes::from_static(b"not recorded")));
        assert_eq!(done(&mut q), vec![(Some(1), failed("42501"))]);
        q.ready_for_query();

        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(refused(2, b"not recorded")));
        q.push(Expect::Sync);
        assert_eq!(q.error("42P01"), None);
        let stmts = q.take_done();
        assert_eq!(stmts[0].end, failed("42P01"));
        // Not at the head: its replacement is left where it was.
        assert!(stmts[0].replace_error.is_some());
    }

    #[test]
    fn an_error_before_the_sync_arrives_skips_until_it_does() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(1)));
        assert_eq!(q.error("42P01"), None);
        assert!(q.is_empty());
        // What the client sent before its Sync: discarded by the server, skipped here.
        q.push(ext(ExtKind::Parse));
        q.push(Expect::Execute(stmt(2)));
        q.push(Expect::Query(stmt(3)));
        assert!(q.is_empty());
        assert_eq!(
            done(&mut q),
            vec![
                (Some(1), failed("42P01")),
                (Some(2), StatementEnd::Skipped),
                (Some(3), StatementEnd::Skipped),
            ]
        );
        // The Sync ends the discard.
        q.push(Expect::Sync);
        q.push(Expect::Execute(stmt(4)));
        assert!(done(&mut q).is_empty());
        q.ready_for_query();
        assert_eq!(q.current().map(|st| st.seq), Some(Some(4)));
        q.command_complete(Some(1));
        assert_eq!(done(&mut q), vec![(Some(4), StatementEnd::Completed)]);
    }

    #[test]
    fn ready_for_query_ends_the_discard_too() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute(stmt(1)));
        q.error("57014");
        q.ready_for_query();
        q.push(Expect::Execute(stmt(2)));
        assert!(!q.is_empty());
        assert_eq!(done(&mut q), vec![(Some(1), failed("57014"))]);
    }

    #[test]
    fn a_query_error_fails_it_but_it_completes_at_ready_for_query() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Query(stmt(1)));
        q.push(Expect::Query(stmt(2)));
        assert_eq!(q.error("23505"), None);
        assert!(done(&mut q).is_empty());
        // A second error does not replace the first.
        assert_eq!(q.error("25P02"), None);
        q.ready_for_query();
        assert_eq!(done(&mut q), vec![(Some(1), failed("23505"))]);
        assert_eq!(q.current().map(|st| st.seq), Some(Some(2)));
    }

    #[test]
    fn a_refused_query_swaps_the_error_and_keeps_its_end() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Query(refused(1, b"blocked")));
        assert_eq!(q.error("42601"), Some(Bytes::from_static(b"blocked")));
        q.ready_for_query();
        // The refusal is recorded through `refused_outcome`, not as a failure.
        assert_eq!(done(&mut q), vec![(Some(1), StatementEnd::Completed)]);
    }

    #[test]
    fn ready_for_query_skips_executes_left_before_the_sync() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Bind));
        q.push(Expect::Execute(stmt(1)));
        q.push(ext(ExtKind::Describe));
        q.push(Expect::Sync);
        q.push(Expect::Query(stmt(2)));
        q.ready_for_query();
        assert_eq!(done(&mut q), vec![(Some(1), StatementEnd::Skipped)]);
        assert!(q.query_at_head());
    }

    #[test]
    fn a_fatal_goes_to_the_front_and_stays_there() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Query(stmt(1)));
        assert_eq!(q.fatal(), None);
        q.push(Expect::Fatal(Bytes::from_static(b"fatal")));
        assert_eq!(q.fatal(), Some(&Bytes::from_static(b"fatal")));
        assert!(q.current().is_none());
        q.ready_for_query();
        assert_eq!(q.fatal(), Some(&Bytes::from_static(b"fatal")));
        assert!(done(&mut q).is_empty());
        // An error with it at the head attributes nothing.
        q.push(Expect::Execute(stmt(2)));
        assert_eq!(q.error("XX000"), None);
        assert!(done(&mut q).is_empty());
        assert_eq!(q.fatal(), Some(&Bytes::from_static(b"fatal")));
    }

    #[test]
    fn a_notice_is_buffered_not_queued() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Notice(Bytes::from_static(b"held")));
        q.push(Expect::Notice(Bytes::from_static(b"again")));
        assert!(q.is_empty());
        assert_eq!(
            q.take_notices(),
            vec![Bytes::from_static(b"held"), Bytes::from_static(b"again")]
        );
        assert!(q.take_notices().is_empty());
    }

    #[test]
    fn describes_are_answered_only_by_their_kind() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::MaskDescribe));
        q.push(ext(ExtKind::Describe));
        q.push(Expect::Execute(stmt(1)));
        assert!(q.ext_at_head(ExtKind::MaskDescribe));
        assert!(!q.described(ExtKind::Describe));
        assert!(q.described(ExtKind::MaskDescribe));
        assert!(q.execute().is_none());
        assert!(q.described(ExtKind::Describe));
        assert_eq!(q.execute().map(|st| st.seq), Some(Some(1)));
        assert!(!q.query_at_head());
    }

    #[test]
    fn a_completion_answers_any_extended_message_at_the_head_but_no_statement() {
        let mut q = ExpectQueue::default();
        q.push(ext(ExtKind::Describe));
        q.push(Expect::Execute(stmt(1)));
        q.ext_complete();
        q.ext_complete();
        assert_eq!(q.current().map(|st| st.seq), Some(Some(1)));
    }

    #[test]
    fn statements_in_flight_at_the_end_are_recorded_as_session_ended() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute(stmt(1)));
        q.command_complete(Some(1));
        q.push(Expect::Query(stmt(2)));
        q.error("40001");
        q.push(ext(ExtKind::Parse));
        q.push(Expect::Execute(stmt(3)));
        q.push(Expect::Sync);
        q.push_unanswered(Expect::Query(stmt(4)));
        assert_eq!(
            ends(q.finish()),
            vec![
                (Some(1), StatementEnd::Completed),
                // An end already seen is kept.
                (Some(2), failed("40001")),
                (Some(3), StatementEnd::SessionEnded),
                (Some(4), StatementEnd::SessionEnded),
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn unanswered_messages_are_queued_as_they_are() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute(stmt(1)));
        q.error("42P01");
        // Skipping: a pushed statement would be skipped; an unanswered one ends with the
        // session instead.
        q.push_unanswered(Expect::Execute(stmt(2)));
        q.push_unanswered(Expect::Fatal(Bytes::from_static(b"fatal")));
        assert_eq!(q.fatal(), None);
        assert_eq!(
            ends(q.finish()),
            vec![
                (Some(1), failed("42P01")),
                (Some(2), StatementEnd::SessionEnded),
            ]
        );
    }
}
