//! Streams: a multi-line body handed out in chunks.

use super::*;

impl Session {
    /// The next chunk of stream `id`: `Some(None)` at its end, `None` if more data is needed.
    pub(super) fn stream_chunk(
        &mut self,
        id: u64,
        max: usize,
    ) -> Result<Option<Option<Vec<u8>>>, ProtoError> {
        // Replies in front of the stream (a batch's, read ahead) come first.
        while self.queue.front().is_some_and(|e| e.id != id) {
            let front = self.queue.front().expect("front exists").id;
            if self.reply_for(front)?.is_none() {
                return Ok(None);
            }
        }
        let limits = Limits {
            max_response_size: usize::MAX,
            ..self.limits
        };
        let body = self
            .body
            .as_mut()
            .expect("an open stream has its body in front");
        let mut sink = BytesSink::chunked(max);
        let done = body.decoder.advance(&mut self.reader, &limits, &mut sink)?;
        if done.is_some() {
            self.queue.pop_front();
            self.body = None;
            if sink.data.is_empty() {
                self.streams.remove(&id);
                return Ok(Some(None));
            }
            self.streams.insert(id, StreamState::Ended);
            return Ok(Some(Some(sink.data)));
        }
        if sink.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Some(sink.data)))
    }
}
