//! The prepared-statement commands: COM_STMT_PREPARE judged like the text it prepares (a
//! refusal never reaches the server), each COM_STMT_EXECUTE judged again as that text and
//! relayed with its binary rows masked; CLOSE, RESET and SEND_LONG_DATA only for statements
//! this session prepared (an id it never got is not passed on).

use std::time::Instant;

use gatehouse_core::audit::Outcome;
use gatehouse_core::policy::Action;
use gatehouse_core::session::{EndReason, StatementOutcome};

use super::{CODES, Conn, UNKNOWN_STMT, UNSUPPORTED_PS, upstream_packet};
use crate::capabilities::DEPRECATE_EOF;
use crate::codec::Packet;

impl Conn<'_> {
    /// The id of a statement this session prepared, from a COM_STMT_* payload.
    pub(super) fn known_statement(&self, packet: &Packet) -> Option<u32> {
        let id = packet.payload.get(1..5)?;
        let id = u32::from_le_bytes(id.try_into().ok()?);
        self.prepared.contains_key(&id).then_some(id)
    }

    /// Forwards a command that has no answer.
    pub(super) async fn forward_only(&mut self, packet: &Packet) -> Result<(), EndReason> {
        self.upstream.stream.queue_wire(&packet.wire);
        self.upstream
            .stream
            .flush()
            .await
            .map_err(|_| EndReason::UpstreamError)
    }

    /// COM_STMT_PREPARE: judged like the statement it prepares (a refusal is recorded and
    /// nothing reaches the server); the server's answer (id, parameter and column
    /// definitions) is relayed and the text kept for the executions.
    pub(super) async fn prepare(&mut self, packet: &Packet, sql: &str) -> Result<(), EndReason> {
        let started = Instant::now();
        self.refresh_views().await?;
        let j = self.judge(sql);
        if !j.allowed() && j.decision.action != Action::Approve {
            let gate = self.session.gate().clone();
            let event = self
                .session
                .info()
                .statement_record(sql, &j.decision, &j.detail(), &CODES);
            let seq = gate.auditor.record(event).await.ok();
            let outcome = StatementOutcome {
                seq,
                refused: Some(Outcome::Blocked),
                ..StatementOutcome::default()
            };
            self.refuse(&j.decision.client_message(), outcome, started)
                .await;
            return Ok(());
        }
        self.upstream.stream.queue_wire(&packet.wire);
        if self.upstream.stream.flush().await.is_err() {
            return Err(EndReason::UpstreamError);
        }
        let deprecate_eof = self.capabilities & DEPRECATE_EOF != 0;
        let head = upstream_packet(self.upstream.stream.read().await)?;
        self.client.queue_wire(&head.wire);
        if head.payload.first() == Some(&0x00) {
            let Some((id, columns, params)) = prepare_ok(&head.payload) else {
                return Err(EndReason::Protocol(
                    "upstream sent a malformed prepare answer",
                ));
            };
            for n in [params, columns] {
                if n == 0 {
                    continue;
                }
                let extra = usize::from(!deprecate_eof);
                for _ in 0..usize::from(n) + extra {
                    let p = upstream_packet(self.upstream.stream.read().await)?;
                    self.client.queue_wire(&p.wire);
                }
            }
            self.prepared.insert(id, sql.to_owned());
        }
        self.client
            .flush()
            .await
            .map_err(|_| EndReason::ClientError)
    }

    /// COM_STMT_EXECUTE: the prepared text judged again, recorded, held if a rule says so,
    /// forwarded; its binary rows are masked as they stream.
    pub(super) async fn execute(&mut self, packet: &Packet) -> Result<(), EndReason> {
        let Some(id) = self.known_statement(packet) else {
            self.send_error(1, UNKNOWN_STMT, "Unknown prepared statement handler")
                .await;
            return Ok(());
        };
        // Cursor flags: the rows would come by COM_STMT_FETCH, which is not followed yet.
        if packet.payload.get(5).is_some_and(|flags| flags & 0x07 != 0) {
            self.send_error(
                1,
                UNSUPPORTED_PS,
                "cursors are not supported through Gatehouse yet; execute without a cursor",
            )
            .await;
            return Ok(());
        }
        let sql = self.prepared.get(&id).cloned().unwrap_or_default();
        self.statement(packet, &sql, None, true).await
    }
}

/// `COM_STMT_PREPARE_OK`: the statement id, its column and parameter counts.
fn prepare_ok(payload: &[u8]) -> Option<(u32, u16, u16)> {
    let mut r = crate::wire::Reader::new(payload);
    r.u8("prepare OK header").ok()?;
    let id = r.u32("statement id").ok()?;
    let columns = r.u16("column count").ok()?;
    let params = r.u16("parameter count").ok()?;
    Some((id, columns, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_ok_is_read_or_refused_whole() {
        let mut ok = vec![0x00];
        ok.extend_from_slice(&7u32.to_le_bytes());
        ok.extend_from_slice(&3u16.to_le_bytes());
        ok.extend_from_slice(&1u16.to_le_bytes());
        ok.extend_from_slice(&[0, 0, 0]);
        assert_eq!(prepare_ok(&ok), Some((7, 3, 1)));
        assert_eq!(prepare_ok(ok.get(..6).unwrap_or_default()), None);
        assert_eq!(prepare_ok(&[]), None);
    }
}
