//! Relaying the upstream's answer to one command: OK and ERR packets, text result sets
//! (several, for multi-statements), with each row masked as it passes.
//!
//! Why packet by packet: a result may be larger than memory. Column definitions and the
//! packets nobody needs to rewrite go out as they came; only a row with a value to mask is
//! rebuilt (same sequence id, same framing). Output is flushed in batches of
//! [`crate::stream::FLUSH_AT`] bytes, so memory stays bounded whatever the result's size.

use gatehouse_core::masking::{MaskCounts, SessionMasks};
use gatehouse_core::policy::StatementInfo;
use gatehouse_core::session::{CapturedValue, ResultCapture, StatementEnd};

use super::judge::{Masked, column_mask};
use crate::codec::Packet;
use crate::mask::{RowMask, ValueKind};
use crate::messages::command::{binary_row, is_temporal, text_row};
use crate::messages::{ColumnDefinition, ErrPacket, MessageError, OkPacket};
use crate::stream::{Duplex, PacketStream, StreamError};
use crate::wire::Reader;

/// `SERVER_MORE_RESULTS_EXISTS`: another result of the same command follows.
const MORE_RESULTS: u16 = 0x0008;

/// Why a relay could not finish: the session cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("upstream: {0}")]
    Upstream(StreamError),
    #[error("client: {0}")]
    Client(StreamError),
    #[error("upstream sent a packet the gateway cannot read: {0}")]
    Message(#[from] MessageError),
}

/// What the relay saw, for the outcome record.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    pub end: StatementEnd,
    pub rows: u64,
    pub result_rows: u64,
    pub result_bytes: u64,
    pub masked: MaskCounts,
    pub capture: Option<ResultCapture>,
}

/// How to relay one command's answer.
pub(crate) struct Relay<'a> {
    pub client: &'a mut PacketStream<Box<dyn Duplex>>,
    pub upstream: &'a mut PacketStream<Box<dyn Duplex>>,
    pub deprecate_eof: bool,
    pub masks: &'a SessionMasks,
    /// The upstream's views (masked sessions): a view's columns are masked as what they show.
    pub views: Option<&'a crate::views::ViewCatalog>,
    /// The analysis of the command's statements, in order (one result each).
    pub statements: &'a [StatementInfo],
    /// The statements use masked values: the server's error messages could quote them.
    pub withhold_errors: bool,
    /// Keep the first result's rows (masked) up to this many bytes.
    pub capture: Option<(usize, &'a [String])>,
    /// Rows come in the binary protocol (the answer to COM_STMT_EXECUTE).
    pub binary: bool,
    /// The statement is a judged `LOAD DATA LOCAL INFILE` of a client that allows it: the
    /// server may ask for a file the statement names (`sql`), and only that one.
    pub local_infile: bool,
    pub sql: &'a str,
}

impl Relay<'_> {
    async fn next(&mut self) -> Result<Packet, RelayError> {
        self.upstream.read().await.map_err(RelayError::Upstream)
    }

    async fn out(&mut self) -> Result<(), RelayError> {
        self.client
            .flush_if_full()
            .await
            .map_err(|e| RelayError::Client(e.into()))
    }

    /// Relays every result of the command; the client's stream is flushed at the end.
    pub async fn run(mut self) -> Result<Relayed, RelayError> {
        let mut done = Relayed::default();
        let mut index = 0usize;
        loop {
            let p = self.next().await?;
            let more = match p.payload.first() {
                Some(0x00) => {
                    let ok = OkPacket::parse(&p.payload)?;
                    done.rows += ok.affected_rows;
                    self.client.queue_wire(&p.wire);
                    ok.status & MORE_RESULTS != 0
                }
                Some(0xff) => {
                    self.error(&p, &mut done)?;
                    false
                }
                Some(0xfb) => {
                    self.local_file(&p, &mut done).await?;
                    // The answer to the whole statement follows.
                    continue;
                }
                _ => self.result_set(&p, index, &mut done).await?,
            };
            index += 1;
            if !more {
                break;
            }
            self.out().await?;
        }
        self.client
            .flush()
            .await
            .map_err(|e| RelayError::Client(e.into()))?;
        Ok(done)
    }

    /// The server asks for a client-side file (`LOCAL INFILE` request). Relayed only when the
    /// client's own judged `LOAD DATA LOCAL` statement names that file — a server asking for
    /// anything else (a rogue or compromised upstream reading the client's files) gets an
    /// empty file instead, and the client never sees the request. The file's packets stream
    /// from the client to the server as they come, up to the empty packet that ends it.
    async fn local_file(&mut self, p: &Packet, done: &mut Relayed) -> Result<(), RelayError> {
        let name = p.payload.get(1..).unwrap_or_default();
        let named =
            !name.is_empty() && std::str::from_utf8(name).is_ok_and(|n| self.sql.contains(n));
        if !(self.local_infile && named) {
            tracing::warn!(
                file = %String::from_utf8_lossy(name),
                "the upstream asked for a client file the statement does not name; sent none"
            );
            self.upstream.queue(&[], p.next_seq());
            return self
                .upstream
                .flush()
                .await
                .map_err(|e| RelayError::Upstream(e.into()));
        }
        self.client.queue_wire(&p.wire);
        self.client
            .flush()
            .await
            .map_err(|e| RelayError::Client(e.into()))?;
        loop {
            let data = self.client.read().await.map_err(RelayError::Client)?;
            done.result_bytes += data.payload.len() as u64;
            self.upstream.queue_wire(&data.wire);
            if data.payload.is_empty() {
                break;
            }
            self.upstream
                .flush_if_full()
                .await
                .map_err(|e| RelayError::Upstream(e.into()))?;
        }
        self.upstream
            .flush()
            .await
            .map_err(|e| RelayError::Upstream(e.into()))
    }

    fn error(&mut self, p: &Packet, done: &mut Relayed) -> Result<(), RelayError> {
        let err = ErrPacket::parse(&p.payload)?;
        done.end.set(StatementEnd::Failed(err.code.to_string()));
        // A message may quote values (a duplicate key, a failed conversion): withheld whole
        // when the statement uses masked columns, and card numbers masked in any case.
        let message = if self.withhold_errors {
            Some(
                b"the server's message is withheld by Gatehouse: the statement uses masked \
                  columns"
                    .to_vec(),
            )
        } else {
            self.masks.mask_pans(&err.message).map(|(m, _)| m)
        };
        match message {
            Some(message) => {
                let mut out = Vec::new();
                ErrPacket { message, ..err }.encode(&mut out);
                self.client.queue(&out, p.first_seq);
            }
            None => self.client.queue_wire(&p.wire),
        }
        Ok(())
    }

    /// One result set, from its column count to its terminator; whether more results follow.
    async fn result_set(
        &mut self,
        head: &Packet,
        index: usize,
        done: &mut Relayed,
    ) -> Result<bool, RelayError> {
        let count = Reader::new(&head.payload)
            .lenenc("column count")
            .map_err(MessageError::from)?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count == 0 || count > 4096 {
            return Err(RelayError::Message(MessageError::Unsupported(
                "a result with no or too many columns",
            )));
        }
        self.client.queue_wire(&head.wire);
        let mut defs = Vec::with_capacity(count);
        for _ in 0..count {
            let p = self.next().await?;
            defs.push(ColumnDefinition::parse(&p.payload)?);
            self.client.queue_wire(&p.wire);
        }
        if !self.deprecate_eof {
            let eof = self.next().await?;
            self.client.queue_wire(&eof.wire);
        }
        let stmt = self.statements.get(index);
        let masks = self.masks;
        let all = self.statements;
        let data = Masked {
            masks,
            views: self.views,
        };
        let mut plan = RowMask::plan_with(&defs, masks, |i, c| {
            column_mask(data, stmt, all, i, count, c)
        });
        let active = plan.active();
        let mut capture = match (&self.capture, &done.capture) {
            (Some(_), None) => Some(ResultCapture::new(
                plan.columns().iter().map(|c| c.name.clone()).collect(),
            )),
            _ => None,
        };
        let more = loop {
            self.out().await?;
            let p = self.next().await?;
            match p.payload.first() {
                Some(0xfe) if self.is_terminator(&p) => {
                    self.client.queue_wire(&p.wire);
                    break self.terminator_status(&p)? & MORE_RESULTS != 0;
                }
                Some(0xff) => {
                    self.error(&p, done)?;
                    break false;
                }
                _ => {}
            }
            done.result_rows += 1;
            done.result_bytes += p.payload.len() as u64;
            let rewritten = match (active, self.binary) {
                (false, _) => None,
                (true, false) => plan.text_row(&p.payload, masks)?,
                (true, true) => plan.binary_row(&p.payload, masks)?,
            };
            if let (Some(c), Some((cap, redacted))) = (capture.as_mut(), &self.capture)
                && !c.is_full()
            {
                let payload = rewritten.as_deref().unwrap_or(&p.payload);
                if self.binary {
                    let values = binary_row(payload, plan.column_types())?;
                    let types = plan.column_types();
                    c.push_row(
                        values.iter().zip(types).map(|(v, t)| match v {
                            None => CapturedValue::Null,
                            Some(b) if ValueKind::of(*t) == ValueKind::Text && !is_temporal(*t) => {
                                CapturedValue::Text(b)
                            }
                            Some(b) => CapturedValue::Binary(b.len()),
                        }),
                        redacted,
                        *cap,
                    );
                } else {
                    let values = text_row(payload, count)?;
                    c.push_row(
                        values.iter().map(|v| match v {
                            Some(b) => CapturedValue::Text(b),
                            None => CapturedValue::Null,
                        }),
                        redacted,
                        *cap,
                    );
                }
            }
            match rewritten {
                Some(row) => {
                    self.client.queue(&row, p.first_seq);
                }
                None => self.client.queue_wire(&p.wire),
            }
        };
        plan.drain_counts(&mut done.masked);
        if capture.is_some() {
            done.capture = capture;
        }
        Ok(more)
    }

    /// Whether a `0xfe` packet ends the rows (an EOF, or an OK under `DEPRECATE_EOF`) rather
    /// than being a row whose first value is at least 2^24 bytes long.
    fn is_terminator(&self, p: &Packet) -> bool {
        if self.deprecate_eof {
            p.payload.len() < 0xff_ffff
        } else {
            p.payload.len() < 9
        }
    }

    fn terminator_status(&self, p: &Packet) -> Result<u16, MessageError> {
        if self.deprecate_eof {
            Ok(OkPacket::parse(&p.payload)?.status)
        } else {
            let mut r = Reader::new(&p.payload);
            r.u8("EOF header")?;
            r.u16("warnings")?;
            Ok(r.u16("status flags")?)
        }
    }
}
