import '@mantine/core/styles.css';
import './app.css';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { MantineProvider, createTheme } from '@mantine/core';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { BrowserRouter } from 'react-router-dom';
import { I18nProvider } from './i18n';
import { App } from './App';
import { meQuery } from './auth';
import { gpusQuery } from './hooks';

const queryClient = new QueryClient({
  defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: false, staleTime: 5_000 } },
});
// The landing page's requests start now, side by side, instead of one after the other (session
// check → render → dashboard chunk → render → GPU list). Without a session the GPU read fails with
// 401 and is forgotten; the sign-in page shows as before.
void queryClient.prefetchQuery(meQuery);
if (window.location.pathname === '/') {
  void import('./pages/Dashboard');
  void queryClient.prefetchQuery({ ...gpusQuery, retry: false }).then(() => {
    if (queryClient.getQueryState(gpusQuery.queryKey)?.status === 'error') queryClient.removeQueries({ queryKey: gpusQuery.queryKey });
  });
}

const theme = createTheme({
  primaryColor: 'indigo',
  // Shade 8 keeps text on light badges and white text on filled buttons above WCAG AA contrast.
  primaryShade: 8,
  fontFamily:
    'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans TC", "PingFang TC", "Microsoft JhengHei", sans-serif',
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <MantineProvider theme={theme} defaultColorScheme="light">
      <QueryClientProvider client={queryClient}>
        <I18nProvider>
          <BrowserRouter>
            <App />
          </BrowserRouter>
        </I18nProvider>
      </QueryClientProvider>
    </MantineProvider>
  </StrictMode>,
);
