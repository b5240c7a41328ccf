//! `kind = "http"`: the trail POSTed in batches to a collector (NDJSON or CEF lines), signed
//! like the webhooks when a secret is configured.

use gatehouse_core::audit::AuditRecord;
use gatehouse_core::config::{Secret, SinkFormat};

use super::IO_TIMEOUT;
use super::error::{DeliveryError, OutputError};
use crate::signed_http::{SIGNATURE_HEADER, TIMESTAMP_HEADER, http_client, signature, unix_now};

/// Batches POSTed to a collector.
pub(super) struct HttpOut {
    client: reqwest::Client,
    url: String,
    secret: Option<Secret>,
    format: SinkFormat,
}

impl HttpOut {
    pub(super) fn new(
        url: String,
        secret: Option<Secret>,
        format: SinkFormat,
    ) -> Result<Self, OutputError> {
        Ok(Self {
            client: http_client(&url, IO_TIMEOUT).map_err(OutputError::HttpClient)?,
            url,
            secret,
            format,
        })
    }

    /// One POST per batch: the lines joined by `\n` (NDJSON for jsonl), with the seq range
    /// in `X-Gatehouse-First-Seq`/`X-Gatehouse-Last-Seq`; any 2xx is success.
    pub(super) async fn post(
        &mut self,
        records: &[AuditRecord],
        lines: &[String],
    ) -> Result<(), DeliveryError> {
        let mut body = lines.join("\n");
        body.push('\n');
        let first = records.first().map_or(0, |r| r.seq);
        let last = records.last().map_or(0, |r| r.seq);
        let content_type = match self.format {
            SinkFormat::Jsonl => "application/x-ndjson",
            SinkFormat::Cef => "text/plain; charset=utf-8",
        };
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", content_type)
            .header("x-gatehouse-first-seq", first.to_string())
            .header("x-gatehouse-last-seq", last.to_string());
        if let Some(secret) = &self.secret {
            let ts = unix_now();
            let sig = signature(secret.expose().as_bytes(), ts, body.as_bytes());
            req = req
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sig);
        }
        // The error text of reqwest can hold the URL (and its token): report the kind only.
        let resp = req.body(body).send().await.map_err(|e| {
            DeliveryError::Post(if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request error"
            })
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DeliveryError::Status(status));
        }
        Ok(())
    }
}
