// Loaded only with the playground's first answer (react-markdown and its parser stay out of the
// initial bundle).
import ReactMarkdown from 'react-markdown';

export default function Markdown({ text }: { text: string }) {
  return <ReactMarkdown skipHtml>{text}</ReactMarkdown>;
}
